"""COCO JSON and VOC XML to YOLO labels, on tiny hand-made inputs with hand-computed rows."""
import json
import subprocess
import sys

import numpy as np
import pytest

from yolov3.convert import ConversionError, coco_to_yolo, main, voc_to_yolo


def _rows(path):
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines()]


COCO = {
    "images": [{"id": 9, "file_name": "a.jpg", "width": 200, "height": 100},
               {"id": 4, "file_name": "b.jpg", "width": 50, "height": 50}],
    "categories": [{"id": 7, "name": "kite"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
    "annotations": [
        {"id": 1, "image_id": 9, "category_id": 3, "bbox": [20, 10, 40, 30], "iscrowd": 0},
        {"id": 2, "image_id": 9, "category_id": 7, "bbox": [180, 90, 40, 20], "iscrowd": 0},
        {"id": 3, "image_id": 9, "category_id": 1, "bbox": [0, 0, 100, 100], "iscrowd": 1},
        {"id": 4, "image_id": 9, "category_id": 1, "bbox": [210, 10, 5, 5]},
    ],
}


def test_coco_hand_computed_rows(tmp_path):
    (tmp_path / "inst.json").write_text(json.dumps(COCO))
    stats = coco_to_yolo(tmp_path / "inst.json", tmp_path / "labels" / "val")
    # ids sorted 1, 3, 7 -> classes 0 (person), 1 (car), 2 (kite)
    assert stats["names"] == ["person", "car", "kite"]
    assert (tmp_path / "labels" / "classes.txt").read_text() == "person\ncar\nkite\n"
    rows = _rows(tmp_path / "labels" / "val" / "a.txt")
    expected = [
        # car [20, 10, 40, 30] in 200x100: cx (20+60)/2/200 = 0.2, cy (10+40)/2/100 = 0.25, w 0.2, h 0.3
        [1, 0.2, 0.25, 0.2, 0.3],
        # kite [180, 90, 40, 20] clipped to x 180..200, y 90..100: cx 0.95, cy 0.95, w 0.1, h 0.1
        [2, 0.95, 0.95, 0.1, 0.1],
    ]  # the crowd box is skipped; the box at x 210 lies outside the image and is skipped as empty
    np.testing.assert_allclose(rows, expected, atol=1e-6)
    assert (tmp_path / "labels" / "val" / "b.txt").read_text() == ""  # no objects: an explicit empty file
    assert (stats["images"], stats["boxes"], stats["crowd_skipped"], stats["empty_skipped"]) == (2, 2, 1, 1)


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d["annotations"].append({"id": 8, "image_id": 9, "category_id": 2, "bbox": [1, 1, 2, 2]}),
     "annotations[4] (id 8): category_id 2 is not in 'categories'"),
    (lambda d: d["annotations"].append({"id": 9, "image_id": 5, "category_id": 1, "bbox": [1, 1, 2, 2]}),
     "annotations[4] (id 9): image_id 5 is not in 'images'"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "annotations[0] (id 1): 'bbox' must be [x, y, width, height]"),
    (lambda d: d["images"][1].update(width=0), "images[1] (id 4): width and height must be positive"),
    (lambda d: d.pop("categories"), "missing or non-list 'categories'"),
])
def test_coco_malformed_input_names_the_record(tmp_path, mutate, fragment):
    content = json.loads(json.dumps(COCO))
    mutate(content)
    (tmp_path / "inst.json").write_text(json.dumps(content))
    with pytest.raises(ConversionError) as info:
        coco_to_yolo(tmp_path / "inst.json", tmp_path / "out")
    assert fragment in str(info.value) and "inst.json" in str(info.value)


def test_coco_invalid_json_reports_line(tmp_path):
    (tmp_path / "inst.json").write_text('{\n "images": [\n}')
    with pytest.raises(ConversionError, match=r"inst.json: invalid JSON at line 3"):
        coco_to_yolo(tmp_path / "inst.json", tmp_path / "out")


VOC_XML = """<annotation>
  <filename>000001.jpg</filename>
  <size><width>500</width><height>375</height><depth>3</depth></size>
  <object><name>dog</name><difficult>0</difficult>
    <bndbox><xmin>48</xmin><ymin>240</ymin><xmax>195</xmax><ymax>371</ymax></bndbox></object>
  <object><name>person</name><difficult>1</difficult>
    <bndbox><xmin>8</xmin><ymin>12</ymin><xmax>352</xmax><ymax>498</ymax></bndbox></object>
</annotation>
"""


def test_voc_hand_computed_rows_and_difficult_flag(tmp_path):
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "000001.xml").write_text(VOC_XML)
    stats = voc_to_yolo(tmp_path / "ann", tmp_path / "labels" / "t")
    # dog (class 11): 1-based inclusive 48..195 x 240..371 -> continuous 47..195 x 239..371
    # cx (47+195)/2/500 = 0.242, cy (239+371)/2/375 = 0.813333, w 148/500 = 0.296, h 132/375 = 0.352
    np.testing.assert_allclose(_rows(tmp_path / "labels" / "t" / "000001.txt"),
                               [[11, 0.242, 0.813333, 0.296, 0.352]], atol=1e-6)
    assert stats["skipped"] == 1  # the difficult person
    voc_to_yolo(tmp_path / "ann", tmp_path / "labels" / "d", include_difficult=True)
    # person (class 14): 7..352 x 11..498, y clipped to 375: cx 179.5/500 = 0.359, cy 193/375, w 0.69, h 364/375
    np.testing.assert_allclose(_rows(tmp_path / "labels" / "d" / "000001.txt")[1],
                               [14, 0.359, 193 / 375, 0.69, 364 / 375], atol=1e-6)
    assert len((tmp_path / "labels" / "classes.txt").read_text().splitlines()) == 20


@pytest.mark.parametrize("text, fragment", [
    (VOC_XML.replace("<name>dog</name>", "<name>dragon</name>"), "<object> #1 has unknown class 'dragon'"),
    (VOC_XML.replace("<width>500</width>", ""), "<size> lacks <width>"),
    (VOC_XML.replace("<xmin>48</xmin>", "<xmin>abc</xmin>"), "<object> #1 <bndbox> <xmin> is not a number"),
    (VOC_XML.replace("</annotation>", ""), "malformed XML at line"),
])
def test_voc_malformed_input_names_file_and_element(tmp_path, text, fragment):
    (tmp_path / "x.xml").write_text(text)
    with pytest.raises(ConversionError) as info:
        voc_to_yolo([tmp_path / "x.xml"], tmp_path / "out")
    assert fragment in str(info.value) and "x.xml" in str(info.value)


def test_cli_help_and_error_exit_code(tmp_path, capsys):
    result = subprocess.run([sys.executable, "-m", "yolov3.convert", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "coco" in result.stdout and "voc" in result.stdout
    (tmp_path / "bad.json").write_text("[]")
    assert main(["coco", "--json", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o")]) == 2
    assert "bad.json: expected a JSON object" in capsys.readouterr().err
    (tmp_path / "ok.json").write_text(json.dumps(COCO))
    assert main(["coco", "--json", str(tmp_path / "ok.json"), "--out", str(tmp_path / "o")]) == 0
    assert "2 images, 2 boxes" in capsys.readouterr().out
