"""detect.py's inputs and the names of their outputs (yolov3/sources.py); val.py names its label files the same way."""
from yolov3.sources import Source, output_stems


def test_output_stems_are_unique_and_readable():
    # the stem when no earlier input has it, else <stem>_2, _3... skipping stems other inputs have of their own
    # (x_2.jpg keeps its name), case-folded; images and videos may share a stem, but an image never takes a
    # video's frame name <video stem>_<frame>
    items = [Source("image", "a/x.jpg"), Source("image", "b/x.jpg"), Source("image", "a/x.png"),
             Source("image", "c/X.JPG"), Source("image", "x_2.jpg"), Source("video", "clip.avi"),
             Source("image", "clip_3.jpg"), Source("image", "clip.jpg"), Source("image", "y_4.jpg"),
             Source("video", "y.mp4"), Source("stream", "0"), Source("image", "stream11.png"),
             Source("image", "d/clip.png"), Source("video", "b/clip.avi"), Source("video", "c/clip.mp4")]
    assert output_stems(items) == ["x", "x_3", "x_4", "X_5", "x_2", "clip", "clip_3_2", "clip", "y_4",
                                   "y_2", "stream11", "stream11", "clip-2", "clip_2", "clip_4"]
