"""detect.py's inputs and the names of their outputs (yolov3/sources.py); val.py names its label files the same way."""
import os
from pathlib import Path

import pytest

from yolov3.sources import Source, SourceError, output_stems, resolve_sources


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


def test_camera_file_names_in_capitals_are_images_and_videos(tmp_path):
    for name in ("IMG_0001.JPG", "DSC_2.Jpeg", "MOV_3.MP4", "clip.AVI", "notes.TXT2"):
        (tmp_path / name).write_bytes(b"x")
    items, warnings = resolve_sources(str(tmp_path))
    assert [(Path(i.location).name, i.kind) for i in items] == [
        ("DSC_2.Jpeg", "image"), ("IMG_0001.JPG", "image"), ("MOV_3.MP4", "video"), ("clip.AVI", "video")]
    assert any("notes.TXT2" in w for w in warnings)
    assert resolve_sources(str(tmp_path / "IMG_0001.JPG"))[0][0].kind == "image"  # given alone, too
    with pytest.raises(SourceError, match="unknown extension '.txt2'"):
        resolve_sources(str(tmp_path / "notes.TXT2"))


def test_a_list_files_relative_entries_are_read_from_its_own_folder(tmp_path, monkeypatch):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "val.txt").write_text("# the val photos\n../photos/a.jpg\n../photos/gone.jpg\n")
    elsewhere = tmp_path / "deep" / "elsewhere"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)  # the user runs detect.py from another folder, where ../photos is not
    items, warnings = resolve_sources(str(tmp_path / "lists" / "val.txt"))
    assert [os.path.normpath(i.location) for i in items] == [str(tmp_path / "photos" / "a.jpg")]
    assert warnings == [f"{tmp_path / 'lists' / 'val.txt'}: listed file not found: "
                        f"{tmp_path / 'lists' / '../photos/gone.jpg'}"]


def test_an_image_url_with_a_query_is_an_image_and_double_star_globs_recurse(tmp_path):
    assert resolve_sources("https://example.com/a.jpg?raw=1") == ([Source("image", "https://example.com/a.jpg?raw=1")], [])
    assert resolve_sources("rtsp://h/live")[0][0].kind == "stream"
    for path in (tmp_path / "y.jpg", tmp_path / "a" / "b" / "x.jpg"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not decoded here")
    found = sorted(item.location for item in resolve_sources(str(tmp_path / "**" / "*.jpg"))[0])
    assert found == sorted([str(tmp_path / "a" / "b" / "x.jpg"), str(tmp_path / "y.jpg")])


def test_http_streams_sorted_globs_lists_relative_to_the_working_folder_and_camera_suffixes(tmp_path, monkeypatch):
    import random

    from yolov3.sources import image_suffix

    assert resolve_sources("http://192.168.0.5:8080/video") == ([Source("stream", "http://192.168.0.5:8080/video")], [])
    assert resolve_sources("http://h/a.jpg")[0][0].kind == "image"
    names = [f"{k:02d}.jpg" for k in range(12)]
    random.Random(0).shuffle(names)
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    found = [item.location for item in resolve_sources(str(tmp_path / "*.jpg"))[0]]
    assert found == sorted(found) and len(found) == 12
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "val.txt").write_text("photos/a.jpg\n")
    assert resolve_sources("lists/val.txt") == ([Source("image", "photos/a.jpg")], [])
    (tmp_path / "LIST.TXT").write_text("photos/a.jpg\n")
    assert [(Path(i.location).name, i.kind) for i in resolve_sources(str(tmp_path / "LIST.TXT"))[0]] == [("a.jpg",
                                                                                                       "image")]
    (tmp_path / "IMG_1234.MOV").write_bytes(b"x")
    assert resolve_sources(str(tmp_path / "IMG_1234.MOV"))[0][0].kind == "video"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.xyz").write_bytes(b"x")
    (tmp_path / "d" / "b.abc").write_bytes(b"x")
    with pytest.raises(SourceError, match="no image or video found"):
        resolve_sources(str(tmp_path / "d"))
    assert image_suffix("https://example.com/a.jpg?raw=1") == ".jpg" and image_suffix("d/X.JPG") == ".JPG"


def test_a_folders_subfolders_are_named_as_not_searched_and_a_double_star_glob_skips_folders(tmp_path):
    # the converter keeps an XML folder's subfolders below images/<split>/: detect.py reads a folder's own files,
    # says how many subfolders it did not search, and the '**/*' it suggests takes them without listing folders
    for path in (tmp_path / "top.jpg", tmp_path / "day1" / "a.jpg", tmp_path / "day2" / "b.png"):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
    (tmp_path / ".cache").mkdir()  # hidden: not counted
    items, warnings = resolve_sources(str(tmp_path))
    assert [Path(i.location).name for i in items] == ["top.jpg"]
    hint = f"2 subfolders not searched (a folder's own files only; --source '{tmp_path / '**' / '*'}' takes every file"
    assert warnings == [f"--source {tmp_path}: {hint} below it)"]
    (tmp_path / "top.jpg").unlink()
    with pytest.raises(SourceError) as error:
        resolve_sources(str(tmp_path))
    assert str(error.value) == f"--source {tmp_path}: no image or video found; {hint} below it)"
    items, warnings = resolve_sources(str(tmp_path / "**" / "*"))
    assert sorted(Path(i.location).name for i in items) == ["a.jpg", "b.png"] and warnings == []
    with pytest.raises(SourceError, match="the pattern matched no file"):
        resolve_sources(str(tmp_path / "day*"))  # folders only
