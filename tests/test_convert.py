"""COCO JSON and VOC XML to YOLO labels, on tiny hand-made inputs with hand-computed rows."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from yolov3.convert import (VOC_CLASSES, ConversionError, coco_to_yolo, main, parse_untrusted_xml, split_by_fraction,
                            voc_to_yolo, voc_to_yolo_dataset)


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
    # a label file is written at each file_name's path: none may lead out of the output folder
    (lambda d: d["images"][1].update(file_name="../../b.jpg"),
     "images[1] (id 4): file_name '../../b.jpg' must be a relative path inside the image folder"),
    (lambda d: d["images"][0].update(file_name="/home/me/a.jpg"), "images[0] (id 9): file_name '/home/me/a.jpg' must"),
    (lambda d: d["images"][0].update(file_name="C:\\data\\a.jpg"), "images[0] (id 9): file_name 'C:\\\\data"),
    (lambda d: d["images"][0].update(file_name=""), "images[0] (id 9): file_name '' must"),
])
def test_coco_malformed_input_names_the_record(tmp_path, mutate, fragment):
    content = json.loads(json.dumps(COCO))
    mutate(content)
    (tmp_path / "inst.json").write_text(json.dumps(content))
    with pytest.raises(ConversionError) as info:
        coco_to_yolo(tmp_path / "inst.json", tmp_path / "out" / "labels")
    assert fragment in str(info.value) and "inst.json" in str(info.value)
    assert not any(p.suffix == ".txt" for p in tmp_path.rglob("*"))  # refused before any label file is written


def test_coco_file_names_in_subfolders_keep_their_subfolders(tmp_path):
    content = json.loads(json.dumps(COCO))
    content["images"][0]["file_name"] = "train2017/a.jpg"  # as some exports list them
    (tmp_path / "inst.json").write_text(json.dumps(content))
    coco_to_yolo(tmp_path / "inst.json", tmp_path / "labels")
    assert sorted(p.relative_to(tmp_path / "labels").as_posix() for p in (tmp_path / "labels").rglob("*.txt")) == [
        "b.txt", "train2017/a.txt"]


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
    stats = voc_to_yolo(tmp_path / "ann", tmp_path / "labels" / "t", classes=VOC_CLASSES)
    # dog (class 11): 1-based inclusive 48..195 x 240..371 -> continuous 47..195 x 239..371
    # cx (47+195)/2/500 = 0.242, cy (239+371)/2/375 = 0.813333, w 148/500 = 0.296, h 132/375 = 0.352
    np.testing.assert_allclose(_rows(tmp_path / "labels" / "t" / "000001.txt"),
                               [[11, 0.242, 0.813333, 0.296, 0.352]], atol=1e-6)
    assert stats["skipped"] == 1  # the difficult person
    voc_to_yolo(tmp_path / "ann", tmp_path / "labels" / "d", include_difficult=True, classes=VOC_CLASSES)
    # person (class 14): 7..352 x 11..498, y clipped to 375: cx 179.5/500 = 0.359, cy 193/375, w 0.69, h 364/375
    np.testing.assert_allclose(_rows(tmp_path / "labels" / "d" / "000001.txt")[1],
                               [14, 0.359, 193 / 375, 0.69, 364 / 375], atol=1e-6)
    assert len((tmp_path / "labels" / "classes.txt").read_text().splitlines()) == 20


@pytest.mark.parametrize("text, fragment", [
    (VOC_XML.replace("<name>dog</name>", "<name>dragon</name>"), "<object> #1 has unknown class 'dragon'"),
    (VOC_XML.replace("<width>500</width>", ""), "<size> lacks <width>"),
    (VOC_XML.replace("<xmin>48</xmin>", "<xmin>abc</xmin>"), "<object> #1 <bndbox> <xmin> is not a number"),
    (VOC_XML.replace("</annotation>", ""), "malformed XML at line"),
    # float() takes these words, which would reach the label file as 'nan' rows or zero-size boxes
    (VOC_XML.replace("<xmin>48</xmin>", "<xmin>nan</xmin>"), "<object> #1 <bndbox> <xmin> is not a number: 'nan'"),
    (VOC_XML.replace("<width>500</width>", "<width>inf</width>"), "<size> <width> is not a number: 'inf'"),
    (VOC_XML.replace("<difficult>0</difficult>", "<difficult>maybe</difficult>"),
     "<object> #1 <difficult> must be 0 or 1, got 'maybe'"),
    (VOC_XML.replace("<annotation>", "<annotations>").replace("</annotation>", "</annotations>"),
     "the root element is <annotations>; a Pascal VOC annotation has <annotation>"),
])
def test_voc_malformed_input_names_file_and_element(tmp_path, text, fragment):
    (tmp_path / "x.xml").write_text(text)
    with pytest.raises(ConversionError) as info:
        voc_to_yolo([tmp_path / "x.xml"], tmp_path / "out", classes=VOC_CLASSES)
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


# ---- a user's own VOC / LabelImg data ------------------------------------------------------------------------------
def _labelimg_xml(filename, width, height, objects):
    """XML as LabelImg writes it; objects are (name, xmin, ymin, xmax, ymax, difficult)."""
    body = "".join(f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated>"
                   f"<difficult>{d}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                   f"<ymax>{y2}</ymax></bndbox></object>" for n, x1, y1, x2, y2, d in objects)
    size = f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>" if width is not None else ""
    return (f"<annotation><folder>photos</folder><filename>{filename}</filename>"
            f"<path>C:\\Users\\me\\photos\\{filename}</path>{size}<segmented>0</segmented>{body}</annotation>")


def _labelimg_folder(folder, count=10, size=(64, 48)):
    """``count`` photos with their XML beside them: image i has one 'WBC' box and, for odd i, a 'Platelets' box."""
    import cv2

    folder.mkdir(parents=True)
    for i in range(count):
        cv2.imwrite(str(folder / f"img{i}.jpg"), np.full((size[1], size[0], 3), 20 * i % 255, np.uint8))
        objects = [("WBC", 11, 11, 30, 20, 0)] + ([("Platelets", 1, 1, 10, 10, 0)] if i % 2 else [])
        (folder / f"img{i}.xml").write_text(_labelimg_xml(f"img{i}.jpg", *size, objects))


def test_voc_class_names_come_from_the_xml_sorted_when_no_names_file(tmp_path, capsys):
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "a.xml").write_text(_labelimg_xml("a.jpg", 100, 100, [("WBC", 1, 1, 50, 50, 0)]))
    (tmp_path / "ann" / "b.xml").write_text(_labelimg_xml("b.jpg", 100, 100, [("Platelets", 1, 1, 10, 10, 0),
                                                                            ("RBC", 51, 1, 100, 50, 0)]))
    (tmp_path / "split.txt").write_text("a\n")
    # only 'a' is converted, yet the names come from every XML of the folder, so each split gets the same indices
    assert main(["voc", "--annotations", str(tmp_path / "ann"), "--ids", str(tmp_path / "split.txt"),
                 "--out", str(tmp_path / "labels" / "train")]) == 0
    out = capsys.readouterr().out
    assert "Platelets, RBC, WBC" in out and "split: 1 images, 1 boxes (WBC 1)" in out
    assert (tmp_path / "labels" / "classes.txt").read_text() == "Platelets\nRBC\nWBC\n"
    # WBC is class 2: continuous 0..50 of 100 -> cx .25, w .5
    np.testing.assert_allclose(_rows(tmp_path / "labels" / "train" / "a.txt"), [[2, 0.25, 0.25, 0.5, 0.5]])


def test_voc_names_file_sets_the_class_order_and_unknown_names_fail(tmp_path, capsys):
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "b.xml").write_text(_labelimg_xml("b.jpg", 100, 100, [("Platelets", 1, 1, 10, 10, 0),
                                                                            ("RBC", 51, 1, 100, 50, 0)]))
    (tmp_path / "names.txt").write_text("RBC\nWBC\nPlatelets\n")
    assert main(["voc", "--annotations", str(tmp_path / "ann"), "--out", str(tmp_path / "l"),
                 "--names", str(tmp_path / "names.txt")]) == 0
    assert [r[0] for r in _rows(tmp_path / "l" / "b.txt")] == [2, 0]  # Platelets line 3, RBC line 1
    assert (tmp_path / "names.txt").read_text() == "RBC\nWBC\nPlatelets\n"  # the user's file is left as it was
    (tmp_path / "names.txt").write_text("RBC\nWBC\n")
    assert main(["voc", "--annotations", str(tmp_path / "ann"), "--out", str(tmp_path / "l"),
                 "--names", str(tmp_path / "names.txt")]) == 2
    assert "b.xml: <object> #1 has unknown class 'Platelets' (known: RBC, WBC)" in capsys.readouterr().err


def test_voc_boxes_outside_the_image_are_clipped_and_counted(tmp_path):
    (tmp_path / "ann").mkdir()
    # continuous -10..40 x 5..120 in a 100 x 80 image -> 0..40 x 5..80 (clipped); 200..300 is empty -> skipped
    (tmp_path / "ann" / "a.xml").write_text(_labelimg_xml("a.jpg", 100, 80, [("cat", -9, 6, 40, 120, 0),
                                                                           ("cat", 201, 1, 300, 10, 0),
                                                                           ("cat", 11, 11, 20, 20, 0)]))
    stats = voc_to_yolo(tmp_path / "ann", tmp_path / "l")
    assert (stats["clipped"], stats["empty"], stats["boxes"]) == (1, 1, 2)
    np.testing.assert_allclose(_rows(tmp_path / "l" / "a.txt")[0], [0, 0.2, 42.5 / 80, 0.4, 75 / 80], atol=1e-6)


@pytest.mark.parametrize("size_xml", ["absent", "zero"])
def test_voc_missing_or_zero_size_is_read_from_the_image(tmp_path, size_xml):
    import cv2

    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "p.png"), np.zeros((30, 70, 3), np.uint8))  # 70 wide, 30 high
    xml = _labelimg_xml("p.png", None if size_xml == "absent" else 0, 0, [("cat", 8, 4, 42, 24, 0)])
    (folder / "p.xml").write_text(xml)
    stats = voc_to_yolo(folder, tmp_path / "l")
    assert stats["size_from_image"] == 1
    # continuous 7..42 x 3..24 in 70 x 30: cx 24.5/70, cy 13.5/30, w 35/70, h 21/30
    np.testing.assert_allclose(_rows(tmp_path / "l" / "p.txt"), [[0, 24.5 / 70, 13.5 / 30, 0.5, 0.7]], atol=1e-6)
    (folder / "p.png").unlink()
    with pytest.raises(ConversionError, match=r"p.xml: <size> is missing or zero and no image was found"):
        voc_to_yolo(folder, tmp_path / "l2")


def test_labelimg_folder_to_a_whole_dataset_that_train_reads(tmp_path, capsys):
    from yolov3.data import create_dataloader, load_data_yaml

    _labelimg_folder(tmp_path / "photos", count=10)
    assert main(["voc", "--annotations", str(tmp_path / "photos"), "--dataset", str(tmp_path / "ds"),
                 "--val-fraction", "0.3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    expected = split_by_fraction([f"img{i}" for i in range(10)], 0.3, seed=1)
    for split, count in (("train", 7), ("val", 3)):
        platelets = sum(int(stem[-1]) % 2 for stem in expected[split])
        assert f"{split}: {count} images, {count + platelets} boxes (Platelets {platelets}, WBC {count})" in out
    for split in ("train", "val"):
        assert sorted(p.stem for p in (tmp_path / "ds" / "images" / split).iterdir()) == expected[split]
        assert sorted(p.stem for p in (tmp_path / "ds" / "labels" / split).iterdir()) == expected[split]
    data = load_data_yaml(tmp_path / "ds" / "data.yaml")
    assert data["names"] == ["Platelets", "WBC"]
    _, dataset = create_dataloader(data, "val", 64, 2, None, 0, 0, shuffle=False)
    boxes = sum(len(dataset.labels[i]) for i in range(len(dataset)))
    assert boxes == sum(1 + int(stem[-1]) % 2 for stem in expected["val"])
    # the whole layout is written once: a second run into the same folder is refused, nothing overwritten
    assert main(["voc", "--annotations", str(tmp_path / "photos"), "--dataset", str(tmp_path / "ds")]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err


def test_a_names_file_that_does_not_exist_is_said_and_written_with_dataset_too(tmp_path, capsys):
    # --names names a file not there yet (a typo, or the first conversion): the classes are collected, the note says
    # which file did not exist, and that file gets them, as with --out; a second conversion then reads it back
    _labelimg_folder(tmp_path / "photos", count=4)
    names = tmp_path / "my_names.txt"
    assert main(["voc", "--annotations", str(tmp_path / "photos"), "--dataset", str(tmp_path / "ds"),
                 "--names", str(names)]) == 0
    assert (f"{names} does not exist yet: classes collected from the XML (sorted; index = position): "
            "Platelets, WBC; written there") in capsys.readouterr().out
    assert names.read_text() == "Platelets\nWBC\n" == (tmp_path / "ds" / "classes.txt").read_text()
    names.write_text("WBC\nPlatelets\n")  # the user reorders it: the next conversion follows the file, silently
    assert main(["voc", "--annotations", str(tmp_path / "photos"), "--dataset", str(tmp_path / "ds2"),
                 "--names", str(names)]) == 0
    assert "does not exist" not in capsys.readouterr().out
    assert (tmp_path / "ds2" / "classes.txt").read_text() == "WBC\nPlatelets\n"


def test_split_by_fraction_takes_a_test_split_from_train_only():
    stems = [f"img{i:02d}" for i in range(40)]
    without = split_by_fraction(stems, 0.2, seed=3)
    split = split_by_fraction(stems, 0.2, seed=3, test_fraction=0.1)
    assert sorted(without) == ["train", "val"] and sorted(split) == ["test", "train", "val"]
    assert split["val"] == without["val"]  # adding a test split moves no val image
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (28, 8, 4)
    assert sorted(split["train"] + split["val"] + split["test"]) == stems  # disjoint and complete
    assert set(split["test"]) <= set(without["train"])
    assert len(split_by_fraction(stems[:5], 0.2, test_fraction=0.01)["test"]) == 1  # at least one when asked
    with pytest.raises(ConversionError, match="^--val-fraction 0.99 leaves no training image of 40$"):
        split_by_fraction(stems, 0.99)
    with pytest.raises(ConversionError, match=r"--test-fraction must be in \[0, 1\), got 1.0"):
        split_by_fraction(stems, 0.2, test_fraction=1.0)
    with pytest.raises(ConversionError,
                       match="--val-fraction 0.5 and --test-fraction 0.5 leave no training image of 40"):
        split_by_fraction(stems, 0.5, test_fraction=0.5)


def test_labelimg_folder_with_a_test_split_satisfies_a_study_that_scores_one(tmp_path, capsys):
    from yolov3.data import load_data_yaml
    from yolov3.data_yaml import declares_split

    _labelimg_folder(tmp_path / "photos", count=10)
    assert main(["voc", "--annotations", str(tmp_path / "photos"), "--dataset", str(tmp_path / "ds"),
                 "--val-fraction", "0.2", "--test-fraction", "0.2", "--seed", "1"]) == 0
    expected = split_by_fraction([f"img{i}" for i in range(10)], 0.2, seed=1, test_fraction=0.2)
    data = load_data_yaml(tmp_path / "ds" / "data.yaml")
    for split in ("train", "val", "test"):
        assert sorted(p.stem for p in (tmp_path / "ds" / "images" / split).iterdir()) == expected[split]
        assert data[split] == [str(tmp_path / "ds" / "images" / split)]
    assert declares_split(tmp_path / "ds" / "data.yaml", "test")
    assert "test: 2 images" in capsys.readouterr().out
    assert main(["voc", "--annotations", str(tmp_path / "photos"), "--out", str(tmp_path / "labels"),
                 "--test-fraction", "0.2"]) == 2
    assert "--split, --val-fraction and --test-fraction go with --dataset" in capsys.readouterr().err


def test_voc_dataset_with_split_files_and_a_missing_image(tmp_path, capsys):
    root = tmp_path / "VOC"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets").mkdir()
    import cv2

    for stem in ("a", "b", "c"):
        cv2.imwrite(str(root / "JPEGImages" / f"{stem}.jpg"), np.zeros((20, 40, 3), np.uint8))
        (root / "Annotations" / f"{stem}.xml").write_text(_labelimg_xml(f"{stem}.jpg", 40, 20,
                                                                        [("dog", 1, 1, 20, 20, int(stem == "c"))]))
    (root / "ImageSets" / "train.txt").write_text("a\nb\n")
    (root / "ImageSets" / "test.txt").write_text("c\n")
    assert main(["voc", "--annotations", str(root / "Annotations"), "--dataset", str(tmp_path / "ds"),
                 "--split", f"train={root / 'ImageSets' / 'train.txt'}",
                 "--split", f"test={root / 'ImageSets' / 'test.txt'}"]) == 0
    out = capsys.readouterr().out
    assert "train: 2 images, 2 boxes (dog 2); 0 difficult skipped" in out
    assert "test: 1 images, 0 boxes (none); 1 difficult skipped" in out  # one summary line per split
    assert (tmp_path / "ds" / "images" / "test" / "c.jpg").is_file()
    assert (tmp_path / "ds" / "labels" / "test" / "c.txt").read_text() == ""
    # a photo that went missing is reported and left out; the rest of the split is converted
    (root / "JPEGImages" / "b.jpg").unlink()
    assert main(["voc", "--annotations", str(root / "Annotations"), "--dataset", str(tmp_path / "ds2"),
                 "--split", f"train={root / 'ImageSets' / 'train.txt'}"]) == 0
    out = capsys.readouterr().out
    assert f"warning: {root / 'Annotations' / 'b.xml'}: no image for it in {root / 'JPEGImages'}" in out
    assert "train: 1 images, 1 boxes (dog 1)" in out and "; 1 files skipped (see the warnings)" in out
    assert sorted(p.name for p in (tmp_path / "ds2" / "labels" / "train").iterdir()) == ["a.txt"]
    assert sorted(p.name for p in (tmp_path / "ds2" / "images" / "train").iterdir()) == ["a.jpg"]


# ---- untrusted XML -------------------------------------------------------------------------------------------------
BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<annotation><size><width>10</width><height>10</height></size>
<object><name>&lol9;</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>
</annotation>"""


def test_billion_laughs_is_refused_before_any_expansion(tmp_path):
    (tmp_path / "a.xml").write_text(BILLION_LAUGHS)
    with pytest.raises(ConversionError, match=r"a.xml: declares a DOCTYPE or entities; refused"):
        voc_to_yolo([tmp_path / "a.xml"], tmp_path / "l")


def test_an_oversized_annotation_is_refused_unread(tmp_path, monkeypatch):
    import yolov3.convert as convert_module

    monkeypatch.setattr(convert_module, "MAX_XML_BYTES", 100)  # 10 MB in use; a small bound keeps the test small
    (tmp_path / "big.xml").write_text("<annotation>" + " " * 200 + "</annotation>")
    with pytest.raises(ConversionError, match=r"big\.xml: 225 bytes; an annotation file is expected to be under 100"):
        parse_untrusted_xml(tmp_path / "big.xml")


def test_external_entities_never_read_another_file(tmp_path):
    (tmp_path / "secret.txt").write_text("TOP-SECRET")
    for declaration in (f'<!DOCTYPE a [<!ENTITY x SYSTEM "file://{tmp_path / "secret.txt"}">]>',
                        f'<!DOCTYPE a SYSTEM "file://{tmp_path / "secret.txt"}">',
                        f'<!DOCTYPE a [<!ENTITY % p SYSTEM "file://{tmp_path / "secret.txt"}"> %p;]>'):
        (tmp_path / "a.xml").write_text(f'<?xml version="1.0"?>{declaration}<annotation><folder>&x;</folder>'
                                        "</annotation>")
        with pytest.raises(ConversionError, match="declares a DOCTYPE or entities") as info:
            parse_untrusted_xml(tmp_path / "a.xml")
        assert "TOP-SECRET" not in str(info.value)


def test_plain_xml_parses_as_elementtree_does(tmp_path):
    import xml.etree.ElementTree as ET

    (tmp_path / "a.xml").write_text(VOC_XML)
    ours, reference = parse_untrusted_xml(tmp_path / "a.xml"), ET.parse(tmp_path / "a.xml").getroot()
    assert ET.tostring(ours) == ET.tostring(reference)


def test_voc_dataset_api_writes_no_yaml_when_asked(tmp_path):
    _labelimg_folder(tmp_path / "p", count=3)
    lines = []
    voc_to_yolo_dataset(tmp_path / "p", tmp_path / "ds", {"train": None}, classes=["WBC", "Platelets"],
                        log=lines.append, write_yaml=False)
    assert not (tmp_path / "ds" / "data.yaml").exists() and len(lines) == 1 and lines[0].startswith("train: 3 images")
    assert (tmp_path / "ds" / "classes.txt").read_text() == "WBC\nPlatelets\n"


# ---- a demanding user's own hand-labelled data --------------------------------------------------------------------
def _jpg(path, width=40, height=20, value=0):
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), value, np.uint8))


def test_xml_in_a_multibyte_or_unknown_encoding_is_read_or_named(tmp_path):
    body = _labelimg_xml("a.jpg", 40, 20, [("红细胞", 1, 1, 10, 10, 0)])
    (tmp_path / "gbk.xml").write_bytes(('<?xml version="1.0" encoding="GBK"?>\n' + body).encode("gbk"))
    assert parse_untrusted_xml(tmp_path / "gbk.xml").findtext("object/name") == "红细胞"
    (tmp_path / "bom.xml").write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    assert parse_untrusted_xml(tmp_path / "bom.xml").findtext("object/name") == "红细胞"
    # decoding it here must not open a way round the DTD refusal
    (tmp_path / "dtd.xml").write_bytes('<?xml version="1.0" encoding="GBK"?><!DOCTYPE a [<!ENTITY x "y">]><a/>'
                                       .encode("gbk"))
    with pytest.raises(ConversionError, match=r"dtd.xml: declares a DOCTYPE or entities; refused"):
        parse_untrusted_xml(tmp_path / "dtd.xml")
    (tmp_path / "odd.xml").write_bytes(b'<?xml version="1.0" encoding="no-such-codec"?>\n<annotation/>')
    with pytest.raises(ConversionError, match=r"odd.xml: declares an encoding Python does not know"):
        parse_untrusted_xml(tmp_path / "odd.xml")
    # saved as Windows-1252 without saying so: the line, the column and what to do
    (tmp_path / "ansi.xml").write_bytes("<annotation>\n<name>café</name></annotation>".encode("cp1252"))
    with pytest.raises(ConversionError) as info:
        parse_untrusted_xml(tmp_path / "ansi.xml")
    assert str(info.value) == (f"{tmp_path / 'ansi.xml'}: malformed XML at line 2 column 10: not well-formed "
                               "(invalid token) (a byte that is not UTF-8: save the file as UTF-8, or declare its "
                               "encoding in <?xml ...?>)")


def test_class_names_are_normalised_and_case_variants_are_not_two_classes(tmp_path, capsys):
    import unicodedata

    folder = tmp_path / "p"
    folder.mkdir()
    spellings = ["RBC", " rbc ", "red  blood\ncell", "red blood cell", "café", unicodedata.normalize("NFD", "café")]
    for i, name in enumerate(spellings):
        (folder / f"n{i}.xml").write_text(_labelimg_xml(f"n{i}.jpg", 40, 20, [(name, 1, 1, 10, 10, 0)]))
    assert main(["voc", "--annotations", str(folder), "--out", str(tmp_path / "l")]) == 2
    assert (f"class names that differ only in case: 'RBC' ({folder / 'n0.xml'}) and 'rbc' ({folder / 'n1.xml'}); "
            "pass --names") in capsys.readouterr().err
    assert not (tmp_path / "l").exists()
    (tmp_path / "names.txt").write_text("RBC\nred blood cell\ncafé\n")
    assert main(["voc", "--annotations", str(folder), "--out", str(tmp_path / "l"),
                 "--names", str(tmp_path / "names.txt")]) == 0
    assert f"note: class 'rbc' in {folder / 'n1.xml'} is taken as 'RBC'" in capsys.readouterr().out
    assert [_rows(tmp_path / "l" / f"n{i}.txt")[0][0] for i in range(6)] == [0, 0, 1, 1, 2, 2]
    # collected without the case variant: whitespace and accents are one spelling each, one name per line
    (folder / "n1.xml").unlink()
    assert main(["voc", "--annotations", str(folder), "--out", str(tmp_path / "l2")]) == 0
    assert (tmp_path / "classes.txt").read_text(encoding="utf-8") == "RBC\ncafé\nred blood cell\n"


def test_difficult_written_as_a_word(tmp_path):
    text = VOC_XML.replace("<difficult>0</difficult>", "<difficult>True</difficult>")
    (tmp_path / "a.xml").write_text(text.replace("<difficult>1</difficult>", "<difficult>false</difficult>"))
    stats = voc_to_yolo([tmp_path / "a.xml"], tmp_path / "l", classes=VOC_CLASSES)
    assert [row[0] for row in _rows(tmp_path / "l" / "a.txt")] == [14]  # the person only: the dog is difficult
    assert stats["difficult"] == 1


def test_unusable_files_are_reported_by_name_and_skipped(tmp_path, capsys):
    p = tmp_path / "p"
    _labelimg_folder(p, count=2)  # img0 (WBC), img1 (WBC, Platelets): usable
    (p / "broken.xml").write_text("<annotation><object>")
    (p / "laughs.xml").write_text(BILLION_LAUGHS)
    (p / "cvat.xml").write_text("<annotations><image/></annotations>")
    _jpg(p / "swapped.jpg", 64, 48)
    (p / "swapped.xml").write_text(_labelimg_xml("swapped.jpg", 64, 48, [("WBC", 30, 1, 10, 10, 0)]))
    (p / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (p / "corrupt.xml").write_text(_labelimg_xml("corrupt.jpg", 64, 48, [("WBC", 1, 1, 10, 10, 0)]))
    (p / "orphan.xml").write_text(_labelimg_xml("orphan.jpg", 64, 48, [("WBC", 1, 1, 10, 10, 0)]))
    assert main(["voc", "--annotations", str(p), "--dataset", str(tmp_path / "ds"), "--val-fraction", "0"]) == 0
    out = capsys.readouterr().out
    for name, fragment in {"broken.xml": "malformed XML at line 1 column 21: no element found",
                           "laughs.xml": "declares a DOCTYPE or entities; refused",
                           "cvat.xml": "the root element is <annotations>",
                           "swapped.xml": "<object> #1 (WBC) has xmax < xmin or ymax < ymin: 30 1 10 10",
                           "corrupt.xml": f"its image {p / 'corrupt.jpg'} cannot be read or decoded",
                           "orphan.xml": f"no image for it in {p}"}.items():
        assert f"warning: {p / name}: {fragment}" in out
    assert "train: 2 images, 3 boxes (Platelets 1, WBC 2)" in out and "; 6 files skipped (see the warnings)" in out
    assert sorted(x.name for x in (tmp_path / "ds" / "labels" / "train").iterdir()) == ["img0.txt", "img1.txt"]
    assert sorted(x.name for x in (tmp_path / "ds" / "images" / "train").iterdir()) == ["img0.jpg", "img1.jpg"]


def test_exif_rotated_photos_get_labels_in_the_frame_training_reads(tmp_path, capsys):
    from PIL import Image

    from yolov3.images import read_image

    folder = tmp_path / "p"
    folder.mkdir()
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:5, :10] = 255  # stored 40 wide, 20 high, with a white patch at the top left
    for stem in ("raw", "shown", "nosize"):
        image = Image.fromarray(stored)
        exif = image.getexif()
        exif[0x0112] = 6  # shown (and read by cv2) a quarter turn clockwise
        image.save(folder / f"{stem}.jpg", exif=exif.tobytes(), quality=100)
    # older LabelImg boxes the stored pixels (<size> 40 x 20); newer tools box the photo as shown (20 x 40)
    (folder / "raw.xml").write_text(_labelimg_xml("raw.jpg", 40, 20, [("patch", 1, 1, 10, 5, 0)]))
    (folder / "shown.xml").write_text(_labelimg_xml("shown.jpg", 20, 40, [("patch", 16, 1, 20, 10, 0)]))
    (folder / "nosize.xml").write_text(_labelimg_xml("nosize.jpg", None, None, [("patch", 16, 1, 20, 10, 0)]))
    ds = tmp_path / "ds"
    assert main(["voc", "--annotations", str(folder), "--dataset", str(ds), "--val-fraction", "0"]) == 0
    out = capsys.readouterr().out
    # training reads 20 wide x 40 high with the patch at x 15..20, y 0..10
    image = read_image(str(ds / "images" / "train" / "raw.jpg"))
    assert image.shape[:2] == (40, 20) and image[:10, 15:].mean() > 200 and image[:, :15].mean() < 30
    for stem in ("raw", "shown", "nosize"):
        np.testing.assert_allclose(_rows(ds / "labels" / "train" / f"{stem}.txt"), [[0, 0.875, 0.125, 0.25, 0.25]],
                                   atol=1e-6)
    assert "1 sizes read from the image, 1 turned with their photo's EXIF orientation" in out
    assert f"note: {folder / 'nosize.xml'}: nosize.jpg has EXIF orientation 6" in out  # which frame cannot be told


@pytest.mark.parametrize("cv2_turns", [True, False], ids=["cv2-turns", "cv2-does-not-turn"])
@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_every_quarter_turn_lands_the_box_where_pillow_shows_the_object(tmp_path, monkeypatch, orientation,
                                                                         cv2_turns):
    import cv2
    from PIL import Image, ImageOps

    import yolov3.convert as convert_module

    folder = tmp_path / "p"
    folder.mkdir()
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[2:8, 3:13] = 255  # x 3..13, y 2..8 of the stored 40 x 20 pixels: no symmetry hides a wrong turn
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(folder / "photo.jpg", exif=exif.tobytes(), quality=100)
    with Image.open(folder / "photo.jpg") as saved:  # Pillow's exif_transpose: the oracle of the shown photo
        shown = np.asarray(ImageOps.exif_transpose(saved))
    ys, xs = np.nonzero(shown[..., 0] > 128)
    shown_box, shown_size = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), (shown.shape[1], shown.shape[0])
    if cv2_turns:  # training reads the photo turned; the boxes were drawn on the stored pixels (older LabelImg)
        objects, size = [("patch", 4, 3, 13, 8, 0)], (40, 20)
        expected_box, frame = shown_box, shown_size
    else:  # a reader that keeps the stored pixels; the boxes were drawn on the photo as shown
        monkeypatch.setattr(convert_module, "read_image",
                            lambda path: cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION))
        x1, y1, x2, y2 = shown_box
        objects, size = [("patch", x1 + 1, y1 + 1, x2, y2, 0)], shown_size
        expected_box, frame = (3, 2, 13, 8), (40, 20)
    (folder / "photo.xml").write_text(_labelimg_xml("photo.jpg", *size, objects))
    ds = tmp_path / "ds"
    assert main(["voc", "--annotations", str(folder), "--dataset", str(ds), "--val-fraction", "0"]) == 0
    x1, y1, x2, y2 = expected_box
    width, height = frame
    np.testing.assert_allclose(_rows(ds / "labels" / "train" / "photo.txt"),
                               [[0, (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width,
                                 (y2 - y1) / height]], atol=1e-6)


def test_a_filename_leading_out_of_the_folder_never_picks_an_image_there(tmp_path, capsys):
    p = tmp_path / "p"
    _jpg(tmp_path / "private" / "photo.jpg")  # beside the annotation folder, not in it
    _jpg(p / "ok.jpg")
    (p / "ok.xml").write_text(_labelimg_xml("ok.jpg", 40, 20, [("cat", 1, 1, 20, 10, 0)]))
    for stem, filename in (("up", "../private/photo.jpg"), ("absolute", str(tmp_path / "private" / "photo.jpg"))):
        (p / f"{stem}.xml").write_text(_labelimg_xml(filename, 40, 20, [("cat", 1, 1, 20, 10, 0)]))
    ds = tmp_path / "ds"
    assert main(["voc", "--annotations", str(p), "--dataset", str(ds), "--val-fraction", "0"]) == 0
    out = capsys.readouterr().out
    assert sorted(x.name for x in (ds / "images" / "train").iterdir()) == ["ok.jpg"]
    for stem in ("up", "absolute"):
        assert f"warning: {p / (stem + '.xml')}: no image for it in {p}" in out


def test_images_are_found_ignoring_case_below_the_folder_and_never_guessed(tmp_path, capsys):
    p = tmp_path / "p"
    _jpg(p / "upper.JPG")
    (p / "upper.xml").write_text(_labelimg_xml("upper.jpg", 40, 20, [("cat", 1, 1, 20, 10, 0)]))
    _jpg(p / "shots" / "IMG_7.JPG")  # a Windows path below the folder, in another case, and another name
    (p / "renamed.xml").write_text(_labelimg_xml("shots\\img_7.jpg", 40, 20, [("cat", 21, 11, 40, 20, 0)]))
    _jpg(p / "b.jpg")
    _jpg(p / "c.jpg")
    (p / "c.xml").write_text(_labelimg_xml("b.jpg", 40, 20, [("cat", 1, 1, 20, 10, 0)]))  # a copy of b's XML
    _jpg(p / "shared.jpg")
    for stem in ("x", "y"):
        (p / f"{stem}.xml").write_text(_labelimg_xml("shared.jpg", 40, 20, [("cat", 1, 1, 20, 10, 0)]))
    ds = tmp_path / "ds"
    assert main(["voc", "--annotations", str(p), "--dataset", str(ds), "--val-fraction", "0"]) == 0
    out = capsys.readouterr().out
    assert sorted(x.name for x in (ds / "images" / "train").iterdir()) == ["renamed.jpg", "upper.jpg"]
    np.testing.assert_allclose(_rows(ds / "labels" / "train" / "renamed.txt"), [[0, 0.75, 0.75, 0.5, 0.5]])
    assert (f"warning: {p / 'c.xml'}: <filename> is b.jpg, but c.jpg, named after the XML, is there too; which "
            "photo are the boxes for?") in out
    for one, other in (("x", "y"), ("y", "x")):
        assert f"warning: {p / f'{one}.xml'}: its image {(p / 'shared.jpg').resolve()} is also the image of " \
               f"{other}.xml; skipped" in out


def test_subfolders_keep_their_paths_so_equal_names_do_not_collide(tmp_path, capsys):
    from yolov3.data import create_dataloader, load_data_yaml

    p = tmp_path / "p"
    for day, boxes in (("day1", 1), ("day2", 2)):
        _jpg(p / day / "img.jpg", 64, 48)
        objects = [("cat", 1, 1, 32, 24, 0), ("cat", 33, 25, 64, 48, 0)][:boxes]
        (p / day / "img.xml").write_text(_labelimg_xml("img.jpg", 64, 48, objects))
    _jpg(p / "day2" / "unlabelled.jpg", 64, 48)
    (p / "day2" / "._img.xml").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")  # hidden: not an annotation
    ds = tmp_path / "ds"
    assert main(["voc", "--annotations", str(p), "--dataset", str(ds), "--val-fraction", "0"]) == 0
    out = capsys.readouterr().out
    assert "train: 2 images, 3 boxes (cat 3)" in out and "warning" not in out
    assert f"note: 1 images in {p} have no XML and are left out (e.g. day2/unlabelled.jpg)" in out
    for day, boxes in (("day1", 1), ("day2", 2)):
        assert len(_rows(ds / "labels" / "train" / day / "img.txt")) == boxes
        assert (ds / "images" / "train" / day / "img.jpg").is_file()
    # --val-fraction 0: a train split alone
    assert (ds / "data.yaml").read_text().splitlines()[2:] == ["train: images/train", 'names: ["cat"]']
    _, dataset = create_dataloader(load_data_yaml(ds / "data.yaml"), "train", 64, 2, None, 0, 0, shuffle=False)
    assert sorted(len(labels) for labels in dataset.labels) == [1, 2]


def test_split_files_with_missing_shared_or_unsafe_ids(tmp_path, capsys):
    ann = tmp_path / "VOC" / "Annotations"
    ann.mkdir(parents=True)
    for stem in ("a", "b"):
        _jpg(tmp_path / "VOC" / "JPEGImages" / f"{stem}.jpg")
        (ann / f"{stem}.xml").write_text(_labelimg_xml(f"{stem}.jpg", 40, 20, [("dog", 1, 1, 20, 20, 0)]))
    (tmp_path / "train.txt").write_text("a\nghost\n../../escape\na\n")
    (tmp_path / "val.txt").write_text("b\n")
    split_args = ["--split", f"train={tmp_path / 'train.txt'}", "--split", f"val={tmp_path / 'val.txt'}"]
    assert main(["voc", "--annotations", str(ann), "--dataset", str(tmp_path / "ds")] + split_args) == 0
    out = capsys.readouterr().out
    assert f"warning: {ann / 'ghost.xml'}: listed in split 'train' but there is no such file; skipped" in out
    assert f"warning: split 'train': id '../../escape' is not a name inside {ann}; skipped" in out
    assert "train: 1 images, 1 boxes (dog 1)" in out and "val: 1 images, 1 boxes (dog 1)" in out
    # a photo in train and val would be scored on what it was trained on
    (tmp_path / "val.txt").write_text("b\na\n")
    assert main(["voc", "--annotations", str(ann), "--dataset", str(tmp_path / "ds2")] + split_args) == 2
    assert "id 'a' is in split 'train' and in split 'val'" in capsys.readouterr().err
    assert main(["voc", "--annotations", str(ann), "--dataset", str(tmp_path / "ds3"),
                 "--split", f"train={tmp_path / 'train.txt'}", "--split", f"train={tmp_path / 'val.txt'}"]) == 2
    assert "--split train=... is given twice" in capsys.readouterr().err
    (tmp_path / "val.txt").write_bytes(b"b\n\xff\n")  # saved in a legacy code page
    assert main(["voc", "--annotations", str(ann), "--dataset", str(tmp_path / "ds2")] + split_args) == 2
    assert f"{tmp_path / 'val.txt'}: line 2 is not UTF-8 text" in capsys.readouterr().err
    assert not (tmp_path / "ds2").exists() and not (tmp_path / "ds3").exists()


def test_a_dataset_that_fails_half_way_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    import shutil

    _labelimg_folder(tmp_path / "p", count=4)
    copy, copies = shutil.copyfile, []

    def copy_until_the_disk_is_full(src, dst, **kwargs):
        copies.append(src)
        if len(copies) == 3:
            raise OSError(28, "No space left on device")
        return copy(src, dst, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copy_until_the_disk_is_full)
    assert main(["voc", "--annotations", str(tmp_path / "p"), "--dataset", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert f"error: cannot write {tmp_path / 'ds' / 'images'}" in err and ": the disk is full" in err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p"]  # neither a half dataset nor its staging folder
    monkeypatch.undo()
    # a text file that cannot be written is named where it was going, not in the staging folder removed after
    import yolov3.convert as convert_module
    from yolov3.files import OutputError

    write = convert_module.atomic_write_text

    def full_at_data_yaml(path, text, **kwargs):
        if Path(path).name == "data.yaml":
            raise OutputError(f"cannot write {path}: the disk is full", 28)
        return write(path, text, **kwargs)

    monkeypatch.setattr(convert_module, "atomic_write_text", full_at_data_yaml)
    assert main(["voc", "--annotations", str(tmp_path / "p"), "--dataset", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert f"error: cannot write {tmp_path / 'ds' / 'data.yaml'}: the disk is full" in err and "converting" not in err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p"]
    monkeypatch.undo()
    assert main(["voc", "--annotations", str(tmp_path / "p"), "--dataset", str(tmp_path / "ds")]) == 0
    assert len(list((tmp_path / "ds" / "labels").rglob("*.txt"))) == 4
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "ds").stat().st_mode & 0o777 == 0o777 & ~umask  # not the staging folder's private 0700


def test_out_folder_with_labels_from_another_run_is_refused(tmp_path, capsys):
    folder = tmp_path / "ann"
    folder.mkdir()
    for stem in ("a", "b"):
        (folder / f"{stem}.xml").write_text(_labelimg_xml(f"{stem}.jpg", 40, 20, [("dog", 1, 1, 20, 20, 0)]))
    assert main(["voc", "--annotations", str(folder), "--out", str(tmp_path / "l")]) == 0
    (folder / "b.xml").unlink()
    assert main(["voc", "--annotations", str(folder), "--out", str(tmp_path / "l")]) == 2
    assert (f"{tmp_path / 'l'}: holds 1 label files this run would not write (e.g. b.txt), which would mix with the "
            "new ones") in capsys.readouterr().err
    assert sorted(x.name for x in (tmp_path / "l").iterdir()) == ["a.txt", "b.txt"]  # nothing removed or written


def test_a_size_that_does_not_fit_the_image_is_reported(tmp_path, capsys):
    p = tmp_path / "p"
    _jpg(p / "scaled.jpg", 64, 48)  # scaled down after labelling: the boxes still fit, normalised
    (p / "scaled.xml").write_text(_labelimg_xml("scaled.jpg", 640, 480, [("dog", 1, 1, 320, 240, 0)]))
    _jpg(p / "other.jpg", 64, 48)
    (p / "other.xml").write_text(_labelimg_xml("other.jpg", 48, 64, [("dog", 1, 1, 20, 20, 0)]))
    assert main(["voc", "--annotations", str(p), "--dataset", str(tmp_path / "ds"), "--val-fraction", "0"]) == 0
    assert (f"warning: {p / 'other.xml'}: <size> is 48 x 64 but its image other.jpg is 64 x 48 (as training reads "
            "it); the boxes do not belong to this image; skipped") in capsys.readouterr().out
    np.testing.assert_allclose(_rows(tmp_path / "ds" / "labels" / "train" / "scaled.txt"), [[0, 0.25, 0.25, 0.5, 0.5]])
    assert not (tmp_path / "ds" / "labels" / "train" / "other.txt").exists()


def test_a_split_with_nothing_converted_is_said_and_left_out_of_the_yaml(tmp_path, capsys):
    _labelimg_folder(tmp_path / "p", count=3)
    (tmp_path / "p" / "img2.xml").write_text("<annotation><object>")  # the only val file: malformed
    (tmp_path / "train.txt").write_text("img0\nimg1\n")
    (tmp_path / "val.txt").write_text("img2\n")
    assert main(["voc", "--annotations", str(tmp_path / "p"), "--dataset", str(tmp_path / "ds"),
                 "--split", f"train={tmp_path / 'train.txt'}", "--split", f"val={tmp_path / 'val.txt'}"]) == 0
    out = capsys.readouterr()
    assert "img2.xml: malformed XML" in out.out + out.err
    assert "split 'val': no file converted; it is left out of data.yaml" in out.out + out.err
    data = yaml.safe_load((tmp_path / "ds" / "data.yaml").read_text())
    assert data["train"] == "images/train" and "val" not in data


# ---- planted-bug checks: edges of the boxes, the names file, split files and the CLI's flags ------------------------
def test_coco_box_with_no_height_left_is_skipped_as_empty(tmp_path):
    coco = {"images": [{"id": 9, "file_name": "a.jpg", "width": 200, "height": 100}],
            "categories": [{"id": 1, "name": "x"}],
            "annotations": [{"id": 1, "image_id": 9, "category_id": 1, "bbox": [20, 30, 40, 0]}]}
    (tmp_path / "inst.json").write_text(json.dumps(coco))
    stats = coco_to_yolo(tmp_path / "inst.json", tmp_path / "labels")
    assert (stats["boxes"], stats["empty_skipped"]) == (0, 1)
    assert (tmp_path / "labels" / "a.txt").read_text() == ""


def test_coco_images_that_map_to_one_label_file_are_refused(tmp_path):
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10},
                       {"id": 2, "file_name": "a.png", "width": 10, "height": 10}],
            "categories": [{"id": 1, "name": "x"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]},
                            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [5, 5, 2, 2]}]}
    (tmp_path / "inst.json").write_text(json.dumps(coco))
    with pytest.raises(ConversionError, match="two images map to the label file"):
        coco_to_yolo(tmp_path / "inst.json", tmp_path / "labels")


def test_a_box_ending_on_the_images_edge_is_not_clipped(tmp_path):
    (tmp_path / "ann").mkdir()
    # 1-based 1..40 x 1..20 is continuous 0..40 x 0..20: the whole 40 x 20 photo, nothing cut
    (tmp_path / "ann" / "a.xml").write_text(_labelimg_xml("a.jpg", 40, 20, [("cat", 1, 1, 40, 20, 0)]))
    stats = voc_to_yolo(tmp_path / "ann", tmp_path / "l")
    assert (stats["clipped"], stats["boxes"]) == (0, 1)
    np.testing.assert_allclose(_rows(tmp_path / "l" / "a.txt"), [[0, 0.5, 0.5, 1.0, 1.0]], atol=1e-6)


def test_a_size_five_percent_off_its_photo_is_reported(tmp_path, capsys):
    _jpg(tmp_path / "p" / "x.jpg", 100, 95)
    (tmp_path / "p" / "x.xml").write_text(_labelimg_xml("x.jpg", 100, 100, [("dog", 1, 1, 50, 50, 0)]))
    (tmp_path / "p" / "y.xml").write_text(_labelimg_xml("y.jpg", 40, 20, [("dog", 1, 1, 5, 5, 0)]))
    _jpg(tmp_path / "p" / "y.jpg")
    assert main(["voc", "--annotations", str(tmp_path / "p"), "--dataset", str(tmp_path / "ds"),
                 "--val-fraction", "0"]) == 0
    out = capsys.readouterr().out
    # |100 x 95 - 100 x 100| = 500 pixels is more than 1 % of 9,500
    assert "x.xml: <size> is 100 x 100 but its image x.jpg is 100 x 95" in out
    assert not (tmp_path / "ds" / "labels" / "train" / "x.txt").exists()


def test_a_names_file_is_folded_like_the_xml_and_blank_or_repeated_lines_are_handled(tmp_path, capsys):
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "a.xml").write_text(_labelimg_xml("a.jpg", 100, 100, [("RBC", 1, 1, 10, 10, 0),
                                                                            ("red blood cell", 51, 1, 100, 50, 0)]))
    argv = ["voc", "--annotations", str(tmp_path / "ann"), "--names", str(tmp_path / "names.txt")]
    (tmp_path / "names.txt").write_text(" RBC \n\nred  blood cell\n")  # spaces and a blank line
    assert main(argv + ["--out", str(tmp_path / "l")]) == 0
    assert [r[0] for r in _rows(tmp_path / "l" / "a.txt")] == [0, 1]
    (tmp_path / "names.txt").write_text("RBC\nred blood cell\nRBC\n")
    assert main(argv + ["--out", str(tmp_path / "l2")]) == 2
    assert "names.txt: the class name 'RBC' is listed twice" in capsys.readouterr().err


def test_split_files_drop_flags_and_suffixes_and_absolute_ids_are_skipped(tmp_path, capsys):
    from yolov3.convert import read_ids

    (tmp_path / "ids.txt").write_text("a.JPG\nb.xml\nc.Png\nd\n000005 -1\n000007  1\n\n")
    assert read_ids(tmp_path / "ids.txt") == ["a", "b", "c", "d", "000005", "000007"]
    _jpg(tmp_path / "outside" / "x.jpg")
    (tmp_path / "outside" / "x.xml").write_text(_labelimg_xml("x.jpg", 40, 20, [("dog", 1, 1, 5, 5, 0)]))
    _jpg(tmp_path / "ann" / "a.jpg")
    (tmp_path / "ann" / "a.xml").write_text(_labelimg_xml("a.jpg", 40, 20, [("dog", 1, 1, 5, 5, 0)]))
    (tmp_path / "train.txt").write_text(f"a\n{tmp_path / 'outside' / 'x'}\n")
    assert main(["voc", "--annotations", str(tmp_path / "ann"), "--dataset", str(tmp_path / "ds"),
                 "--split", f"train={tmp_path / 'train.txt'}"]) == 0
    out = capsys.readouterr().out
    assert f"id '{tmp_path / 'outside' / 'x'}' is not a name inside" in out
    assert sorted(p.name for p in (tmp_path / "ds" / "labels" / "train").iterdir()) == ["a.txt"]
    assert not (tmp_path / "outside" / "x.txt").exists()


def test_summary_line_by_hand():
    from yolov3.convert import summary_line

    stats = {"names": ["a"], "per_class": {"a": 3}, "images": 1, "boxes": 3, "difficult": 0, "clipped": 2,
             "empty": 1, "size_from_image": 0, "out": "o"}
    assert summary_line("train", stats) == ("train: 1 images, 3 boxes (a 3); 0 difficult skipped, 2 clipped to the "
                                            "image, 1 empty skipped, 0 sizes read from the image -> o")


def test_split_by_fraction_follows_the_seed_and_rounds_the_count():
    import random

    stems = [f"img{i:02d}" for i in range(20)]
    vals = []
    for seed in (5, 6):
        order = sorted(stems)
        random.Random(seed).shuffle(order)
        vals.append(split_by_fraction(stems, 0.25, seed=seed)["val"])
        assert vals[-1] == sorted(order[:5])  # round(20 x .25) = 5
    assert vals[0] != vals[1]
    nine = split_by_fraction([f"i{k}" for k in range(9)], 0.2)  # 9 x .2 = 1.8 -> 2
    assert (len(nine["val"]), len(nine["train"])) == (2, 7)


def test_dataset_flags_default_fraction_difficult_names_and_images(tmp_path, capsys):
    _labelimg_folder(tmp_path / "p", 10)
    assert main(["voc", "--annotations", str(tmp_path / "p"), "--dataset", str(tmp_path / "ds")]) == 0
    assert len(list((tmp_path / "ds" / "images" / "val").iterdir())) == 2  # the default .2 of 10
    assert len(list((tmp_path / "ds" / "images" / "train").iterdir())) == 8
    assert "val: images/val" in (tmp_path / "ds" / "data.yaml").read_text()
    # --names and --difficult reach a --dataset conversion
    (tmp_path / "names.txt").write_text("WBC\nPlatelets\n")
    (tmp_path / "q").mkdir()
    _jpg(tmp_path / "q" / "img1.jpg", 64, 48)
    (tmp_path / "q" / "img1.xml").write_text(_labelimg_xml("img1.jpg", 64, 48, [("WBC", 11, 11, 30, 20, 0),
                                                                             ("Platelets", 1, 1, 10, 10, 1)]))
    assert main(["voc", "--annotations", str(tmp_path / "q"), "--dataset", str(tmp_path / "ds2"), "--val-fraction",
                 "0", "--names", str(tmp_path / "names.txt"), "--difficult"]) == 0
    assert yaml.safe_load((tmp_path / "ds2" / "data.yaml").read_text())["names"] == ["WBC", "Platelets"]
    np.testing.assert_allclose(_rows(tmp_path / "ds2" / "labels" / "train" / "img1.txt"),
                               [[0, 20 / 64, 15 / 48, 20 / 64, 10 / 48], [1, 5 / 64, 5 / 48, 10 / 64, 10 / 48]],
                               atol=1e-6)
    # --images: the photos in a folder of their own
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "a.xml").write_text(_labelimg_xml("a.jpg", 40, 20, [("cat", 1, 1, 20, 10, 0)]))
    _jpg(tmp_path / "pics" / "a.jpg")
    assert main(["voc", "--annotations", str(tmp_path / "ann"), "--images", str(tmp_path / "pics"), "--dataset",
                 str(tmp_path / "ds3"), "--val-fraction", "0"]) == 0
    assert (tmp_path / "ds3" / "images" / "train" / "a.jpg").is_file()


# ---- planted-bug checks, second pass: COCO records, VOC edges, names and ids, flags of the CLI ----------------------
def test_coco_records_checked_and_ids_kept_by_class_order_and_subfolder(tmp_path):
    import copy

    def convert(data, out="labels"):
        (tmp_path / "inst.json").write_text(json.dumps(data))
        return coco_to_yolo(tmp_path / "inst.json", tmp_path / out / "val")

    bad = copy.deepcopy(COCO)
    bad["images"][1]["height"] = 0
    with pytest.raises(ConversionError, match=r"images\[1\] \(id 4\): width and height must be positive numbers, "
                                              r"got 50 x 0"):
        convert(bad, "h")
    bad = copy.deepcopy(COCO)
    bad["annotations"][0]["bbox"] = ["20", 10, 40, 30]
    with pytest.raises(ConversionError, match=r"annotations\[0\] \(id 1\): 'bbox' must be \[x, y, width, height\] "
                                              "numbers"):
        convert(bad, "s")
    twice = {"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
             "categories": [{"id": 1, "name": "person"}, {"id": 1, "name": "car"}], "annotations": []}
    with pytest.raises(ConversionError, match=r"categories\[1\]: duplicate category id 1"):
        convert(twice, "d")
    nested = copy.deepcopy(COCO)
    nested["images"][0]["file_name"] = "train2017/a.jpg"
    convert(nested)
    record = json.loads((tmp_path / "labels" / "val" / "coco_ids.json").read_text())
    assert record["category_ids"] == [1, 3, 7]  # in class order: person, car, kite
    assert record["image_ids"] == {"train2017/a": 9, "b": 4}
    assert main(["coco", "--json", str(tmp_path / "inst.json"), "--out", str(tmp_path / "n" / "val"),
                 "--names", str(tmp_path / "my.names")]) == 0
    assert (tmp_path / "my.names").read_text() == "person\ncar\nkite\n"
    assert not (tmp_path / "n" / "classes.txt").exists()


def test_voc_sizes_boxes_one_pixel_wide_and_swapped_rows_upper_case_xml_and_a_bom(tmp_path):
    from yolov3.convert import read_ids

    (tmp_path / "x.xml").write_text(VOC_XML.replace("<height>375</height>", "<height>-375</height>"))
    with pytest.raises(ConversionError, match="<size> must be positive, got 500 x -375"):
        voc_to_yolo([tmp_path / "x.xml"], tmp_path / "out", classes=VOC_CLASSES)
    (tmp_path / "y.xml").write_text(_labelimg_xml("y.jpg", 64, 48, [("WBC", 1, 30, 10, 10, 0)]))
    with pytest.raises(ConversionError, match=r"has xmax < xmin or ymax < ymin: 1 30 10 10"):
        voc_to_yolo([tmp_path / "y.xml"], tmp_path / "l", classes=["WBC"])
    (tmp_path / "ann").mkdir()
    # 1-based 5..5 x 5..8 is one pixel wide: continuous 4..5 x 4..8 -> cx 4.5 / 40, cy 6 / 20, w 1 / 40, h 4 / 20
    (tmp_path / "ann" / "a.xml").write_text(_labelimg_xml("a.jpg", 40, 20, [("cat", 5, 5, 5, 8, 0)]))
    (tmp_path / "ann" / "b.XML").write_text(_labelimg_xml("b.jpg", 40, 20, [("cat", 1, 1, 20, 10, 0)]))
    stats = voc_to_yolo(tmp_path / "ann", tmp_path / "one")
    assert stats["boxes"] == 2
    np.testing.assert_allclose(_rows(tmp_path / "one" / "a.txt"), [[0, 0.1125, 0.3, 0.025, 0.2]], atol=1e-6)
    np.testing.assert_allclose(_rows(tmp_path / "one" / "b.txt"), [[0, 0.25, 0.25, 0.5, 0.5]], atol=1e-6)
    (tmp_path / "ids.txt").write_bytes(b"\xef\xbb\xbfa\nb\n")  # saved by a Windows editor
    assert read_ids(tmp_path / "ids.txt") == ["a", "b"]


def test_photos_told_apart_by_case_kinds_training_skips_and_a_names_file_with_case_twins(tmp_path, capsys):
    import cv2

    photos = tmp_path / "p"
    _jpg(photos / "ok.jpg")
    (photos / "ok.xml").write_text(_labelimg_xml("ok.jpg", 40, 20, [("cat", 1, 1, 20, 10, 0)]))
    _jpg(photos / "PHOTO.JPG", value=0)
    _jpg(photos / "photo.JPG", value=255)
    (photos / "x.xml").write_text(_labelimg_xml("Photo.jpg", 40, 20, [("cat", 1, 1, 20, 10, 0)]))
    cv2.imwrite(str(photos / "a.ppm"), np.zeros((20, 40, 3), np.uint8))
    (photos / "a.xml").write_text(_labelimg_xml("a.ppm", 40, 20, [("cat", 1, 1, 20, 10, 0)]))
    assert main(["voc", "--annotations", str(photos), "--dataset", str(tmp_path / "ds"), "--val-fraction", "0"]) == 0
    out = capsys.readouterr().out
    assert f"warning: {photos / 'x.xml'}: no image for it in {photos}" in out
    assert "its image a.ppm is not of a kind training reads" in out
    assert sorted(p.name for p in (tmp_path / "ds" / "images" / "train").iterdir()) == ["ok.jpg"]
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "a.xml").write_text(_labelimg_xml("a.jpg", 100, 100, [("Rbc", 1, 1, 10, 10, 0)]))
    (tmp_path / "ann" / "b.xml").write_text(_labelimg_xml("b.jpg", 100, 100, [("RBC", 1, 1, 10, 10, 0)]))
    (tmp_path / "names.txt").write_text("RBC\nrbc\n")
    assert main(["voc", "--annotations", str(tmp_path / "ann"), "--out", str(tmp_path / "l"),
                 "--names", str(tmp_path / "names.txt")]) == 0
    assert "a.xml: <object> #1 has unknown class 'Rbc' (known: RBC, rbc)" in capsys.readouterr().out
    assert not (tmp_path / "l" / "a.txt").exists()


def test_the_cli_refuses_flag_mixes_and_honours_images_and_difficult_in_labels_only_mode(tmp_path, capsys):
    _labelimg_folder(tmp_path / "p", 3)
    (tmp_path / "t.txt").write_text("img0\nimg1\n")
    (tmp_path / "ghost.txt").write_text("ghost\n")
    refused = [
        (["--out", str(tmp_path / "l"), "--val-fraction", "0.2"], "go with --dataset"),
        (["--dataset", str(tmp_path / "ds"), "--ids", str(tmp_path / "t.txt")], "--ids goes with --out"),
        (["--dataset", str(tmp_path / "ds"), "--split", f"train={tmp_path / 't.txt'}", "--val-fraction", "0.2"],
         "give either --split or --val-fraction/--test-fraction, not both"),
        (["--dataset", str(tmp_path / "ds"), "--split", f"train={tmp_path / 't.txt'}",
          "--split", f"val={tmp_path / 'ghost.txt'}"], "split 'val': none of its 1 ids has an XML file"),
    ]
    for flags, message in refused:
        assert main(["voc", "--annotations", str(tmp_path / "p"), *flags]) == 2, flags
        assert message in capsys.readouterr().err
        assert not (tmp_path / "l").exists() and not (tmp_path / "ds").exists()
    with pytest.raises(SystemExit) as info:
        main(["voc", "--annotations", str(tmp_path / "p"), "--dataset", str(tmp_path / "ds"),
              "--split", f"../../evil={tmp_path / 't.txt'}"])
    assert info.value.code == 2 and "expected NAME=IDS_FILE" in capsys.readouterr().err
    assert not (tmp_path.parent / "evil").exists()
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "a.xml").write_text(_labelimg_xml("a.jpg", None, None, [("cat", 1, 1, 20, 10, 0)]))
    _jpg(tmp_path / "pics" / "a.jpg")
    assert main(["voc", "--annotations", str(tmp_path / "ann"), "--images", str(tmp_path / "pics"),
                 "--out", str(tmp_path / "img")]) == 0
    np.testing.assert_allclose(_rows(tmp_path / "img" / "a.txt"), [[0, 0.25, 0.25, 0.5, 0.5]], atol=1e-6)
    (tmp_path / "voc").mkdir()
    (tmp_path / "voc" / "000001.xml").write_text(VOC_XML)
    hard = tmp_path / "hard" / "labels"  # a folder of its own: classes.txt is written beside it
    assert main(["voc", "--annotations", str(tmp_path / "voc"), "--out", str(hard), "--difficult"]) == 0
    assert [r[0] for r in _rows(hard / "000001.txt")] == [0, 1]  # dog, and the difficult person


def test_labels_left_in_a_subfolder_of_out_are_found(tmp_path, capsys):
    (tmp_path / "ann" / "day1").mkdir(parents=True)
    for stem in ("a", "b"):
        (tmp_path / "ann" / "day1" / f"{stem}.xml").write_text(_labelimg_xml(f"{stem}.jpg", 40, 20,
                                                                             [("dog", 1, 1, 20, 20, 0)]))
    assert main(["voc", "--annotations", str(tmp_path / "ann"), "--out", str(tmp_path / "l")]) == 0
    (tmp_path / "ann" / "day1" / "b.xml").unlink()
    assert main(["voc", "--annotations", str(tmp_path / "ann"), "--out", str(tmp_path / "l")]) == 2
    assert "holds 1 label files this run would not write (e.g. day1/b.txt)" in capsys.readouterr().err
