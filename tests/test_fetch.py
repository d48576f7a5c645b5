"""Datasets that build themselves: hostile archives refused, a loopback download, local sources, nothing half-done.

Every archive here is fabricated by the test; the "download" is a server on 127.0.0.1 run by the test.
"""
from __future__ import annotations

import http.server
import io
import json
import os
import re
import stat
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from yolov3.archives import ArchiveError, download, extract_archive
from yolov3.data import DataError, load_data_yaml
from yolov3.fetch import ENV_SOURCE, build_dataset, parse_download_spec
from yolov3.prepare import main as prepare_main


# ---- hostile archives ----------------------------------------------------------------------------------------------
def _zip(path: Path, entries) -> Path:
    """entries: (name, bytes) or (name, bytes, unix mode)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for entry in entries:
            info = zipfile.ZipInfo(entry[0])
            info.compress_type = zipfile.ZIP_DEFLATED
            if len(entry) == 3:
                info.external_attr = entry[2] << 16
            zf.writestr(info, entry[1])
    return path


def _tar(path: Path, members, mode="w:gz") -> Path:
    """members: (name, type, data or linkname)."""
    with tarfile.open(path, mode) as tf:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
            else:
                info.linkname = payload or ""
                tf.addfile(info)
    return path


def _outside_files(tmp_path: Path, dest: Path) -> set:
    return {p for p in tmp_path.rglob("*") if p.is_file() and dest not in p.parents and p.suffix not in (".zip", ".gz")}


@pytest.mark.parametrize("name, fragment", [
    ("../evil.txt", "would land outside the target folder"),
    ("ok/../../evil.txt", "would land outside the target folder"),
    ("/tmp/evil-absolute.txt", "would land outside the target folder"),
    ("C:\\evil.txt", "would land outside the target folder"),
    ("..\\evil.txt", "would land outside the target folder"),
])
def test_zip_entries_that_escape_are_refused_by_name(tmp_path, name, fragment):
    archive = _zip(tmp_path / "a.zip", [("fine.txt", b"ok"), (name, b"pwned")])
    with pytest.raises(ArchiveError) as info:
        extract_archive(archive, tmp_path / "out")
    assert fragment in str(info.value) and repr(name) in str(info.value)
    assert _outside_files(tmp_path, tmp_path / "out") == set()
    assert not Path("/tmp/evil-absolute.txt").exists()


def test_zip_symlink_entry_is_refused(tmp_path):
    archive = _zip(tmp_path / "a.zip", [("link", b"/etc/passwd", stat.S_IFLNK | 0o777)])
    with pytest.raises(ArchiveError, match="'link' is a symbolic link"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "link").exists()


@pytest.mark.parametrize("member, fragment", [
    (("../evil.txt", tarfile.REGTYPE, b"x"), "would land outside the target folder"),
    (("/abs/evil.txt", tarfile.REGTYPE, b"x"), "would land outside the target folder"),
    (("link", tarfile.SYMTYPE, "/etc/passwd"), "'link' is a symbolic link to '/etc/passwd'"),
    (("hard", tarfile.LNKTYPE, "/etc/passwd"), "'hard' is a hard link to '/etc/passwd'"),
    (("dev", tarfile.CHRTYPE, None), "'dev' is not a file or folder"),
    (("fifo", tarfile.FIFOTYPE, None), "'fifo' is not a file or folder"),
])
def test_tar_members_that_escape_or_link_are_refused(tmp_path, member, fragment):
    archive = _tar(tmp_path / "a.tar.gz", [("fine.txt", tarfile.REGTYPE, b"ok"), member])
    with pytest.raises(ArchiveError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        extract_archive(archive, tmp_path / "out")
    assert _outside_files(tmp_path, tmp_path / "out") == set()


def test_a_symlinked_folder_then_a_file_through_it_cannot_escape(tmp_path):
    # the classic two-step: a link to a folder outside, then a file "inside" the link
    archive = _tar(tmp_path / "a.tar", [("d", tarfile.SYMTYPE, str(tmp_path / "elsewhere")),
                                        ("d/evil.txt", tarfile.REGTYPE, b"x")], mode="w")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ArchiveError, match="symbolic link"):
        extract_archive(archive, tmp_path / "out")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_bombs_stop_at_the_byte_bound(tmp_path):
    zeros = b"\0" * (4 << 20)  # 4 MiB that deflate to ~4 KB
    archive = _zip(tmp_path / "bomb.zip", [(f"z{i}", zeros) for i in range(4)])
    assert archive.stat().st_size < 100_000
    with pytest.raises(ArchiveError, match=r"declares 16,777,216 bytes extracted, more than 1,000,000"):
        extract_archive(archive, tmp_path / "out", max_bytes=1_000_000)
    tar_bomb = _tar(tmp_path / "bomb.tar.gz", [(f"z{i}", tarfile.REGTYPE, zeros) for i in range(4)])
    with pytest.raises(ArchiveError, match=r"passes the bound of 5,000,000 bytes"):
        extract_archive(tar_bomb, tmp_path / "out2", max_bytes=5_000_000)
    written = sum(p.stat().st_size for p in (tmp_path / "out2").rglob("*") if p.is_file())
    assert written <= 5_000_000


def test_too_many_entries_and_duplicates_are_refused(tmp_path):
    many = _zip(tmp_path / "many.zip", [(f"f{i}", b"") for i in range(30)])
    with pytest.raises(ArchiveError, match="30 entries, more than 10"):
        extract_archive(many, tmp_path / "o1", max_entries=10)
    many_tar = _tar(tmp_path / "many.tar.gz", [(f"f{i}", tarfile.REGTYPE, b"") for i in range(30)])
    with pytest.raises(ArchiveError, match="more than 10 entries; refused"):  # a tar is streamed: counted as read
        extract_archive(many_tar, tmp_path / "o3", max_entries=10)
    assert len(list((tmp_path / "o3").rglob("f*"))) <= 10
    twice = _tar(tmp_path / "twice.tar.gz", [("a.txt", tarfile.REGTYPE, b"1"), ("a.txt", tarfile.REGTYPE, b"2")])
    with pytest.raises(ArchiveError, match="appears twice"):
        extract_archive(twice, tmp_path / "o2")


def test_good_archives_round_trip(tmp_path):
    payload = {"top/a.txt": b"alpha", "top/sub/b.bin": bytes(range(256)) * 9, "top/empty.txt": b""}
    zip_archive = _zip(tmp_path / "g.zip", [("top/", b"")] + list(payload.items()))
    tar_archive = _tar(tmp_path / "g.tar.xz", [(n, tarfile.REGTYPE, d) for n, d in payload.items()], mode="w:xz")
    for archive, out in ((zip_archive, tmp_path / "z"), (tar_archive, tmp_path / "t")):
        assert extract_archive(archive, out) == 3
        for name, data in payload.items():
            assert (out / name).read_bytes() == data
    (tmp_path / "junk.zip").write_bytes(b"PK\3\4 not really")
    with pytest.raises(ArchiveError, match="junk.zip: not a zip or tar archive"):
        extract_archive(tmp_path / "junk.zip", tmp_path / "j")


# ---- a fabricated VOC dataset in an archive, served on 127.0.0.1 ----------------------------------------------------
SPLITS = {"train": ["im0", "im1", "im2"], "val": ["im3", "im4"]}


def _voc_archive(tmp_path: Path, bad_entry: bool = False) -> Path:
    """``Repo-master/VOCSET/{Annotations,JPEGImages,ImageSets/Main}`` and a LICENSE, zipped as a repository download.
    Image i is 60 x 40 with one 'cell' box at 1-based 11..30 x 11..20 and, for i >= 3, one 'blob' at 1..10 x 1..10."""
    import cv2

    entries = [("Repo-master/", b""), ("Repo-master/LICENSE", b"MIT, fabricated")]
    for i in range(5):
        ok, jpg = cv2.imencode(".jpg", np.full((40, 60, 3), 40 * i, np.uint8))
        objects = "<object><name>cell</name><difficult>0</difficult><bndbox><xmin>11</xmin><ymin>11</ymin>" \
                  "<xmax>30</xmax><ymax>20</ymax></bndbox></object>"
        if i >= 3:
            objects += "<object><name>blob</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax>" \
                       "<ymax>10</ymax></bndbox></object>"
        xml = f"<annotation><filename>im{i}.jpg</filename><size><width>60</width><height>40</height></size>" \
              f"{objects}</annotation>"
        entries += [(f"Repo-master/VOCSET/JPEGImages/im{i}.jpg", jpg.tobytes()),
                    (f"Repo-master/VOCSET/Annotations/im{i}.xml", xml.encode())]
    for split, ids in SPLITS.items():
        entries.append((f"Repo-master/VOCSET/ImageSets/Main/{split}.txt", "\n".join(ids).encode() + b"\n"))
    if bad_entry:
        entries.append(("Repo-master/../../escape.txt", b"x"))
    return _zip(tmp_path / ("bad.zip" if bad_entry else "repo.zip"), entries)


def _data_yaml(tmp_path: Path, url: str, extra: str = "") -> Path:
    path = tmp_path / "cells.yaml"
    path.write_text(f"path: cells\ntrain: images/train\nval: images/val\nnames: [cell, blob]\n"
                    f"download:\n  url: {url}\n  voc: VOCSET\n"
                    f"  splits: {{train: ImageSets/Main/train.txt, val: ImageSets/Main/val.txt}}\n"
                    f"  keep: [LICENSE]\n{extra}")
    return path


class _Server:
    """Serves one file on 127.0.0.1; ``truncate`` claims more bytes than it sends; ``no_length`` sends no
    Content-Length (the end of the connection ends the file); counts requests."""

    def __init__(self, payload: bytes, truncate: bool = False, no_length: bool = False):
        outer = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server API)
                outer.requests += 1
                self.send_response(200)
                if not no_length:
                    self.send_header("Content-Length", str(len(payload) + (1000 if truncate else 0)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/repo.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _rows(path: Path):
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines()]


def test_a_missing_dataset_downloads_extracts_and_converts_itself_once(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_SOURCE, raising=False)
    with _Server(_voc_archive(tmp_path).read_bytes()) as server:
        yaml_path = _data_yaml(tmp_path, server.url)
        data = load_data_yaml(yaml_path)
        assert server.requests == 1
        root = tmp_path / "cells"
        assert sorted(p.name for p in (root / "images" / "train").iterdir()) == ["im0.jpg", "im1.jpg", "im2.jpg"]
        # the YAML's class order: cell 0, blob 1; 1-based 11..30 x 11..20 -> continuous 10..30 x 10..20 in 60 x 40
        np.testing.assert_allclose(_rows(root / "labels" / "val" / "im4.txt"),
                                   [[0, 20 / 60, 15 / 40, 20 / 60, 10 / 40], [1, 5 / 60, 5 / 40, 10 / 60, 10 / 40]],
                                   atol=1e-6)
        assert (root / "LICENSE").read_text() == "MIT, fabricated"
        assert json.loads((root / "fetched.json").read_text())["splits"] == {"train": 3, "val": 2}
        assert data["train"] == [str(root / "images" / "train")]
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind
        load_data_yaml(yaml_path)  # complete now: nothing fetched again
        assert server.requests == 1


def test_a_truncated_download_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_SOURCE, raising=False)
    with _Server(_voc_archive(tmp_path).read_bytes(), truncate=True) as server:
        with pytest.raises(DataError, match="could not download|stopped at"):
            load_data_yaml(_data_yaml(tmp_path, server.url))
    assert not (tmp_path / "cells").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_hostile_archive_stops_the_build_and_leaves_no_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_SOURCE, str(_voc_archive(tmp_path, bad_entry=True)))
    with pytest.raises(DataError, match="would land outside the target folder"):
        load_data_yaml(_data_yaml(tmp_path, "https://example.invalid/never.zip"))
    assert not (tmp_path / "cells").exists() and not (tmp_path.parent / "escape.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_offline_the_error_says_how_to_use_a_local_copy(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_SOURCE, raising=False)
    with _Server(b"") as server:
        url = server.url
    with pytest.raises(DataError) as info:  # the server is gone: connection refused
        load_data_yaml(_data_yaml(tmp_path, url))
    assert f"could not download {url}" in str(info.value) and "--source" in str(info.value)
    assert ENV_SOURCE in str(info.value)


def test_local_archive_or_folder_sources(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(ENV_SOURCE, raising=False)
    archive = _voc_archive(tmp_path)
    yaml_path = _data_yaml(tmp_path, "https://example.invalid/never.zip")
    assert prepare_main([str(yaml_path), "--source", str(archive)]) == 0
    assert len(list((tmp_path / "cells" / "labels" / "val").iterdir())) == 2
    assert "complete" not in capsys.readouterr().out  # it was just built
    assert prepare_main([str(yaml_path)]) == 0
    assert "complete" in capsys.readouterr().out
    # a folder (an unpacked copy) through the environment variable, into a second dataset
    extract_archive(archive, tmp_path / "unpacked")
    monkeypatch.setenv(ENV_SOURCE, str(tmp_path / "unpacked"))
    other = tmp_path / "other.yaml"
    other.write_text(yaml_path.read_text().replace("path: cells", "path: cells2"))
    load_data_yaml(other)
    for split in ("train", "val"):
        assert sorted(os.listdir(tmp_path / "cells2" / "labels" / split)) == \
            sorted(os.listdir(tmp_path / "cells" / "labels" / split))


def test_checksum_and_a_foreign_folder_at_the_target(tmp_path, monkeypatch):
    archive = _voc_archive(tmp_path)
    monkeypatch.setenv(ENV_SOURCE, str(archive))
    yaml_path = _data_yaml(tmp_path, "https://example.invalid/x.zip", extra=f"  sha256: '{'0' * 64}'\n")
    with pytest.raises(DataError, match=f"is not the {'0' * 64} the YAML expects"):
        load_data_yaml(yaml_path)
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / "mine.txt").write_text("a user's file")
    with pytest.raises(DataError, match="exists but lacks some of its splits"):
        load_data_yaml(_data_yaml(tmp_path, "https://example.invalid/x.zip"))
    assert (tmp_path / "cells" / "mine.txt").read_text() == "a user's file"


@pytest.mark.parametrize("block, fragment", [
    ("  colour: red\n", "unknown key 'colour'"),
    ("  max_bytes: -1\n", "max_bytes must be a positive whole number"),
])
def test_bad_download_blocks_name_the_key(tmp_path, block, fragment):
    with pytest.raises(DataError, match=fragment):
        load_data_yaml(_data_yaml(tmp_path, "https://example.invalid/x.zip", extra=block))


def test_download_spec_paths_must_stay_inside_the_archive():
    with pytest.raises(ValueError, match=r"voc: '\.\./\.\./etc' must be a relative path inside the archive"):
        parse_download_spec({"url": "https://x/y.zip", "voc": "../../etc", "splits": {"train": "t.txt"}}, "d.yaml")
    assert parse_download_spec("bash data/scripts/get_voc.sh", "d.yaml") is None  # text: never run
    # every path the spec names: a split file read from outside, or a host file copied in by 'keep'
    base = {"url": "https://x/y.zip", "voc": "V", "splits": {"train": "t.txt"}}
    for changes, where, path in (({"splits": {"train": "t.txt", "val": "../../secret.txt"}}, "splits.val",
                                  "../../secret.txt"),
                                 ({"keep": ["LICENSE", "/etc/passwd"]}, "keep", "/etc/passwd"),
                                 ({"keep": ["../outside"]}, "keep", "../outside")):
        with pytest.raises(ValueError, match=re.escape(f"d.yaml: 'download'.{where}: {path!r} must be a relative")):
            parse_download_spec({**base, **changes}, "d.yaml")


def test_download_is_bounded_and_atomic(tmp_path):
    with _Server(b"x" * 5000) as server:
        with pytest.raises(ArchiveError, match="more than the bound of 1,000"):
            download(server.url, tmp_path / "f", max_bytes=1000)
        assert not (tmp_path / "f").exists()
        assert download(server.url, tmp_path / "f", max_bytes=10_000).read_bytes() == b"x" * 5000
        assert not (tmp_path / "f.part").exists()
    with _Server(b"x" * 5000, no_length=True) as server:  # no size announced: counted as it arrives
        with pytest.raises(ArchiveError, match="more than the bound of 1,000 bytes .max_bytes.; stopped"):
            download(server.url, tmp_path / "g", max_bytes=1000)
        assert not (tmp_path / "g").exists()
        assert download(server.url, tmp_path / "g", max_bytes=10_000).read_bytes() == b"x" * 5000


def test_build_dataset_refuses_an_unknown_source(tmp_path):
    spec = parse_download_spec({"url": "https://x/y.zip", "voc": "V", "splits": {"train": "t.txt"}}, "d.yaml")
    with pytest.raises(ValueError, match="neither a URL nor an existing archive or folder"):
        build_dataset(spec, tmp_path / "ds", ["a"], source=str(tmp_path / "nope.zip"), log=lambda line: None)


def test_the_shipped_bccd_yaml_builds_from_an_archive_laid_out_like_the_real_one(tmp_path, monkeypatch):
    """data/bccd.yaml's download block (voc folder, split files, kept LICENSE) against a fabricated archive in the
    layout of the BCCD repository's download: class indices follow the YAML's names (RBC 0, WBC 1, Platelets 2)."""
    import cv2
    import yaml

    from conftest import REPO_ROOT

    shipped = yaml.safe_load((REPO_ROOT / "data" / "bccd.yaml").read_text())
    top = "BCCD_Dataset-master/BCCD"
    entries = [("BCCD_Dataset-master/LICENSE", b"MIT License (fabricated copy)")]
    ok, jpg = cv2.imencode(".jpg", np.zeros((48, 64, 3), np.uint8))
    split_of = {"a": "train", "b": "val", "c": "test"}
    for stem, name in zip(split_of, ("RBC", "WBC", "Platelets")):
        xml = (f"<annotation><filename>{stem}.jpg</filename><size><width>64</width><height>48</height></size>"
               f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
               f"<xmax>32</xmax><ymax>24</ymax></bndbox></object></annotation>")
        entries += [(f"{top}/JPEGImages/{stem}.jpg", jpg.tobytes()), (f"{top}/Annotations/{stem}.xml", xml.encode())]
    for stem, split in split_of.items():
        entries.append((f"{top}/ImageSets/Main/{split}.txt", f"{stem}\n".encode()))
    archive = _zip(tmp_path / "BCCD_Dataset-master.zip", entries)
    monkeypatch.setenv(ENV_SOURCE, str(archive))
    local = tmp_path / "bccd.yaml"
    local.write_text((REPO_ROOT / "data" / "bccd.yaml").read_text().replace("path: ../datasets/bccd", "path: bccd"))
    data = load_data_yaml(local)
    assert data["names"] == shipped["names"] == ["RBC", "WBC", "Platelets"]
    for stem, split in split_of.items():
        row = _rows(tmp_path / "bccd" / "labels" / split / f"{stem}.txt")[0]
        assert row[0] == ["RBC", "WBC", "Platelets"].index({"a": "RBC", "b": "WBC", "c": "Platelets"}[stem])
        np.testing.assert_allclose(row[1:], [0.25, 0.25, 0.5, 0.5], atol=1e-6)
    assert (tmp_path / "bccd" / "LICENSE").read_text().startswith("MIT")


def test_prepare_refuses_a_yaml_whose_download_is_text(tmp_path, capsys):
    (tmp_path / "d.yaml").write_text("train: a\nval: a\nnames: [x]\ndownload: bash get.sh\n")
    assert prepare_main([str(tmp_path / "d.yaml")]) == 2
    assert "has no download: mapping" in capsys.readouterr().err


def test_an_upper_case_checksum_a_given_source_before_the_environment_and_windows_zips(tmp_path, monkeypatch):
    spec = {"url": "https://example.invalid/x.zip", "voc": "VOCSET",
            "splits": {"train": "ImageSets/Main/train.txt", "val": "ImageSets/Main/val.txt"}}
    assert parse_download_spec({**spec, "sha256": "AB" * 32}, "d.yaml").sha256 == "ab" * 32
    monkeypatch.setenv(ENV_SOURCE, str(tmp_path / "nope.zip"))  # a stale setting: the given source wins
    root = build_dataset(parse_download_spec(spec, "d.yaml"), tmp_path / "cells", ["cell", "blob"],
                         source=str(_voc_archive(tmp_path)), log=lambda s: None)
    assert root == tmp_path / "cells" and (root / "labels" / "val" / "im4.txt").is_file()
    archive = _zip(tmp_path / "w.zip", [("top\\sub\\a.txt", b"alpha")])  # PowerShell 5's separators
    assert extract_archive(archive, tmp_path / "o") == 1
    assert (tmp_path / "o" / "top" / "sub" / "a.txt").read_bytes() == b"alpha"


VOC_SPEC = {"url": "https://example.invalid/x.zip", "voc": "VOCSET",
            "splits": {"train": "ImageSets/Main/train.txt", "val": "ImageSets/Main/val.txt"}}


def test_archive_and_download_bounds_are_inclusive_and_damage_is_named(tmp_path):
    archive = _zip(tmp_path / "ten.zip", [(f"f{i}", b"") for i in range(10)])
    assert extract_archive(archive, tmp_path / "ten", max_entries=10) == 10
    member = tarfile.TarInfo("a.bin")
    member.size = 1000
    with tarfile.open(tmp_path / "k.tar.gz", "w:gz") as tar:
        tar.addfile(member, io.BytesIO(b"k" * 1000))
    assert extract_archive(tmp_path / "k.tar.gz", tmp_path / "k", max_bytes=1000) == 1
    payload = np.random.default_rng(0).bytes(200_000)
    member = tarfile.TarInfo("big.bin")
    member.size = len(payload)
    with tarfile.open(tmp_path / "big.tar.gz", "w:gz") as tar:
        tar.addfile(member, io.BytesIO(payload))
    whole = (tmp_path / "big.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(ArchiveError, match="damaged or truncated archive"):
        extract_archive(tmp_path / "cut.tar.gz", tmp_path / "cut")
    with _Server(b"x" * 1000) as server:
        assert download(server.url, tmp_path / "f", max_bytes=1000).read_bytes() == b"x" * 1000


def test_download_spec_checks_and_what_build_dataset_honours(tmp_path, monkeypatch):
    import hashlib
    import tempfile

    from yolov3.fetch import FetchError

    with pytest.raises(FetchError, match="max_bytes must be a positive whole number of bytes, got 0"):
        parse_download_spec({**VOC_SPEC, "max_bytes": 0}, "d.yaml")
    with pytest.raises(FetchError, match="splits names 'training'; splits are train, val, test"):
        parse_download_spec({**VOC_SPEC, "splits": {"training": "t.txt"}}, "d.yaml")
    archive = _voc_archive(tmp_path)
    with pytest.raises(FetchError, match=r"more than 1,000 \(max_bytes\)"):
        build_dataset(parse_download_spec({**VOC_SPEC, "max_bytes": 1000}, "d.yaml"), tmp_path / "small",
                      ["cell", "blob"], source=str(archive), log=lambda s: None)
    assert not (tmp_path / "small").exists()
    with _Server(archive.read_bytes()) as server:
        with pytest.raises(FetchError, match=re.escape(server.url) + r": [\d,]+ bytes, more than the bound of 1,000"):
            build_dataset(parse_download_spec({**VOC_SPEC, "max_bytes": 1000}, "d.yaml"), tmp_path / "small",
                          ["cell", "blob"], source=server.url, log=lambda s: None)
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(".DS_Store", b"x")  # a hidden file beside the single top folder
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    (tmp_path / "cells").mkdir()  # an empty folder made beforehand is fine
    staged = []
    real_mkdtemp = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: (staged.append(real_mkdtemp(*a, **k)), staged[-1])[1])
    monkeypatch.setenv("HOME", str(tmp_path))
    root = build_dataset(parse_download_spec({**VOC_SPEC, "sha256": digest}, "d.yaml"), tmp_path / "cells",
                         ["cell", "blob"], source="~/repo.zip", log=lambda s: None)
    assert (root / "labels" / "val" / "im4.txt").is_file()
    assert Path(staged[0]).parent == tmp_path  # staged beside the dataset: the final rename stays on one disk


def test_an_interrupted_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    from yolov3.files import atomic_write, atomic_write_text

    atomic_write_text(tmp_path / "a.txt", "old")

    def interrupted(fh):
        fh.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "a.txt", interrupted)
    assert (tmp_path / "a.txt").read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_prepare_names_a_source_it_cannot_use(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(ENV_SOURCE, raising=False)
    yaml_path = _data_yaml(tmp_path, "https://example.invalid/x.zip")
    assert prepare_main([str(yaml_path), "--source", str(tmp_path / "missing.zip")]) == 2
    assert "is neither a URL nor an existing archive or folder" in capsys.readouterr().err
