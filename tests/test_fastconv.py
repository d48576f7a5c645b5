"""The CPU inference fast path (yolov3/fastconv.py): optimize_for_inference keeps the fused model's outputs on every
kind of fast conv, falls back to the plain path, follows weight changes; and the private torch calls it rests on
still exist."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from yolov3 import fastconv, memory, prepcache
from yolov3.fastconv import FastConvLayer
from yolov3.layers import ConvLayer
from yolov3.model import Darknet


def test_the_private_torch_calls_still_exist_and_compute_a_conv():
    """The fast path rests on torch calls that are not public API; a torch release may drop or change them. This
    test names the call that is gone, so the failure says what to replace (yolov3/fastconv.py, its private-API
    section) rather than surfacing as a wrong choice of path or an AttributeError deep inside inference."""
    missing = fastconv.missing_private_calls()
    if not torch.backends.mkldnn.is_available():  # a build without oneDNN never had its ops
        missing = [name for name in missing if not name.startswith("torch.ops.mkldnn")]
    assert not missing, (f"torch {torch.__version__} no longer has {', '.join(missing)}, which yolov3/fastconv.py "
                         "calls: adapt its private-API section (or drop that fast path)")
    assert fastconv.edit_count(torch.zeros(1)) == 0
    if not torch.backends.mkldnn.is_available():
        return
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 16, 3, 1, 1).eval()
    x = torch.rand(1, 8, 12, 12).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = F.leaky_relu(conv(x), 0.1)
        try:
            got = fastconv.onednn_convolution(x, fastconv.onednn_weight(conv, tuple(x.shape)), conv.bias, conv,
                                              "leaky")
        except Exception as error:  # a changed signature is as fatal as a removed call
            pytest.fail(f"torch {torch.__version__}: {fastconv.PRIVATE_TORCH_CALLS[0]} / "
                        f"{fastconv.PRIVATE_TORCH_CALLS[1]} no longer take the arguments yolov3/fastconv.py "
                        f"passes: {type(error).__name__}: {error}")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_fast_convs_replace_the_fused_layers_and_keep_their_weights(cfg_dir):
    model = Darknet(cfg_dir / "yolov3-tiny.cfg")
    convs = [m.conv for m in model.module_list if isinstance(m, ConvLayer)]
    model.optimize_for_inference(select="rule")
    fast = [m for m in model.module_list if isinstance(m, ConvLayer)]
    assert all(isinstance(m, FastConvLayer) for m in fast) and [m.conv for m in fast] == convs  # same tensors
    model.optimize_for_inference(onednn=False, winograd=False)  # again: fresh layers, the new switches
    assert [(m._use_onednn, m._use_winograd) for m in model.module_list if isinstance(m, ConvLayer)] == \
        [(False, False)] * len(convs)


def _assert_same_outputs(got: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-4) -> None:
    """Decoded outputs agree: boxes (pixels) within ``tolerance`` of the largest box value, probabilities absolutely."""
    torch.testing.assert_close(got[..., :4], expected[..., :4], rtol=0,
                               atol=tolerance * expected[..., :4].abs().max().item())
    torch.testing.assert_close(got[..., 4:], expected[..., 4:], rtol=0, atol=tolerance)


def _optimized_pair(cfg_dir, randomize, name, images, **kwargs):
    """The rule's choices by default: these tests check that each kind of fast conv computes the right numbers."""
    model = randomize(Darknet(cfg_dir / name), images, seed=2)
    plain = copy.deepcopy(model).fuse()
    return plain, model.optimize_for_inference(**{"select": "rule", **kwargs})


@pytest.mark.parametrize("name, height, width, kinds", [
    ("yolov3-tiny.cfg", 416, 320, {"winograd4", "winograd2", "onednn"}),  # every kind of fast conv
    ("yolov3-small.cfg", 256, 192, {"onednn"}),  # narrow convs: Winograd would not pay
])
def test_optimize_for_inference_keeps_outputs(cfg_dir, randomize, name, height, width, kinds):
    torch.manual_seed(0)
    images = torch.rand(1, 3, height, width)
    plain, fast = _optimized_pair(cfg_dir, randomize, name, images)
    convs = [m for m in fast.module_list if isinstance(m, ConvLayer)]
    with torch.inference_mode():
        expected = plain(images)
        got = fast(images)
        again = fast(images.contiguous(memory_format=torch.channels_last))
    assert fast.is_fused and not fast.training
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters() if p.dim() == 4)
    methods = [set(m.__dict__.get("_fast_cache", {})) for m in convs]  # the weight layouts each conv built
    assert all(methods)  # every conv took a fast path
    assert set().union(*methods) == kinds
    _assert_same_outputs(got, expected)
    assert torch.equal(again, got)


def test_optimize_for_inference_falls_back_to_plain_path(cfg_dir, randomize):
    torch.manual_seed(0)
    images = torch.rand(1, 3, 64, 64)
    plain, fast = _optimized_pair(cfg_dir, randomize, "yolov3-small.cfg", images)
    with torch.inference_mode():
        reference = fast(images)
    # autograd on: the plain path, so gradients reach the input
    wanted = images.clone().requires_grad_(True)
    out = fast(wanted)
    out[..., 4].sum().backward()
    assert wanted.grad is not None and wanted.grad.abs().sum() > 0
    _assert_same_outputs(out.detach(), reference)
    # float64 input: the plain path in float64
    with torch.inference_mode():
        double = copy.deepcopy(plain).double()(images.double())
        fast_double = copy.deepcopy(fast).double()(images.double())
    torch.testing.assert_close(fast_double, double)


def test_optimized_model_copies_pickles_and_follows_weight_changes(cfg_dir, randomize, tmp_path):
    torch.manual_seed(0)
    images = torch.rand(1, 3, 96, 96)
    _plain, fast = _optimized_pair(cfg_dir, randomize, "yolov3-small.cfg", images)
    with torch.inference_mode():
        before = fast(images)
    clone = copy.deepcopy(fast)  # the derived weights (oneDNN's have no storage) are dropped and rebuilt
    torch.save(fast, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    with torch.inference_mode():
        assert torch.equal(clone(images), before) and torch.equal(loaded(images), before)
        # weights edited in place after the first call: the derived weights must follow, not serve stale results
        for module in fast.module_list:
            if isinstance(module, ConvLayer):
                module.conv.weight.mul_(0.5)
        halved_fast = fast(images)
        for module in clone.module_list:
            if isinstance(module, ConvLayer):
                module._use_onednn = module._use_winograd = False
                module.conv.weight.mul_(0.5)
        halved_plain = clone(images)
    assert not torch.allclose(halved_fast, before, atol=1e-2)
    _assert_same_outputs(halved_fast, halved_plain)


def test_optimize_for_inference_without_fast_paths_is_fuse_and_channels_last(cfg_dir, randomize):
    torch.manual_seed(0)
    images = torch.rand(1, 3, 64, 96)
    plain, fast = _optimized_pair(cfg_dir, randomize, "yolov3-tiny.cfg", images, onednn=False, winograd=False)
    with torch.inference_mode():
        _assert_same_outputs(fast(images), plain(images), tolerance=1e-5)  # NHWC vs NCHW: float32 rounding only
    assert not any("_fast_cache" in m.__dict__ for m in fast.module_list)


def test_optimized_model_built_in_inference_mode_and_replaced_weights(cfg_dir, randomize):
    torch.manual_seed(0)
    images = torch.rand(1, 3, 64, 64)
    plain, fast = _optimized_pair(cfg_dir, randomize, "yolov3-tiny.cfg", images, winograd=True)
    with torch.inference_mode():
        # weights created inside inference_mode have no version counter: the fast path must cope
        inside = copy.deepcopy(plain).optimize_for_inference()
        _assert_same_outputs(inside(images), plain(images))
        fast(images)  # derived weights built
        # replace a conv's weight twice before the next call: the new tensor may reuse the old one's memory,
        # so only identity (not the address) tells that the derived weights are stale
        first_conv = fast.module_list[0].conv
        replacement = first_conv.weight.detach().clone() * -1
        first_conv.weight = torch.nn.Parameter(first_conv.weight.detach().clone(), requires_grad=False)
        first_conv.weight = torch.nn.Parameter(replacement, requires_grad=False)
        plain.module_list[0].conv.weight = torch.nn.Parameter(replacement.contiguous(), requires_grad=False)
        _assert_same_outputs(fast(images), plain(images))


SPEED = {"plain": 1.0, "onednn": 2.0, "winograd2": 3.0, "winograd4": 0.5}  # scripted seconds per call


def _scripted_clock(monkeypatch, timed: list) -> None:
    """Measurement timings scripted (plain fastest for 1x1 convs, F(4x4) Winograd for the 3x3 ones) so that the
    tests do not depend on the machine; every call still computes its output."""
    def scripted(self, method, x):
        timed.append(method)
        out = self._run_method(method, x)
        return out, SPEED[method] if method != "plain" or self.conv.kernel_size == (1, 1) else 9.0

    monkeypatch.setattr(FastConvLayer, "_timed_run", scripted)


@pytest.fixture
def fresh_measurements(monkeypatch, tmp_path):
    """No choice measured by an earlier test of this process; the preparation cache in a temporary file."""
    monkeypatch.setattr(fastconv, "_MEASURED_METHODS", {})
    monkeypatch.setattr(fastconv, "_PREP_CACHE", None)
    monkeypatch.setenv("YOLOV3_PREP_CACHE", str(tmp_path / "prep-cache.json"))
    return tmp_path / "prep-cache.json"


def test_measured_selection_takes_the_fastest_candidate_and_remembers_it(cfg_dir, randomize, monkeypatch,
                                                                          fresh_measurements):
    """select='measure' runs each candidate on the conv's own calls (1 untimed + MEASURE_REPEATS timed each) and
    keeps the fastest; every call of the measurement returns the right output."""
    timed = []
    _scripted_clock(monkeypatch, timed)
    images = torch.rand(1, 3, 160, 160)
    plain, fast = _optimized_pair(cfg_dir, randomize, "yolov3-tiny.cfg", images, select="measure",
                                  expected_calls=fastconv.JOB_MIN_CALLS)
    convs = [m for m in fast.module_list if isinstance(m, ConvLayer)]
    calls_to_decide = 4 * (1 + fastconv.MEASURE_REPEATS)  # the most candidates a conv has, each 1 + repeats calls
    with torch.inference_mode():
        expected = plain(images)
        for _ in range(calls_to_decide):
            _assert_same_outputs(fast(images), expected)  # candidates in turn: still the right numbers
        calls = len(timed)
        fast(images)  # decided: nothing is timed again
    assert calls > 0 and len(timed) == calls
    assert all(not m.__dict__.get("_trials") for m in convs)
    kept = [(conv.conv.kernel_size, set(conv.__dict__.get("_fast_cache", {}))) for conv in convs]
    # 1x1: plain won, and the losers' prepared weights were dropped; 3x3: F(4x4) where the map allows Winograd
    # (>= 8 cells a side), else oneDNN (the next fastest)
    assert all(methods == set() for size, methods in kept if size == (1, 1))
    three = [methods for size, methods in kept if size == (3, 3)]
    assert all(methods in ({"winograd4"}, {"onednn"}) for methods in three)
    assert {"winograd4"} in three and {"onednn"} in three


def _tiny_fast(cfg_dir, expected_calls):
    model = Darknet(cfg_dir / "yolov3-tiny.cfg")
    return model.optimize_for_inference(select="measure", expected_calls=expected_calls)


def test_a_short_job_never_measures_and_runs_the_plain_path(cfg_dir, monkeypatch, fresh_measurements):
    timed = []
    _scripted_clock(monkeypatch, timed)
    fast = _tiny_fast(cfg_dir, expected_calls=fastconv.JOB_MIN_CALLS - 1)
    with torch.inference_mode():
        for _ in range(3 * fastconv.MEASURE_AFTER_CALLS // 2):
            fast(torch.rand(1, 3, 64, 64))
    assert timed == []
    assert all(not m.__dict__.get("_fast_cache") for m in fast.module_list)  # no derived weights: plain only
    assert not fresh_measurements.exists()


def test_a_job_of_unknown_length_measures_a_shape_after_enough_plain_calls(cfg_dir, monkeypatch, fresh_measurements):
    timed = []
    _scripted_clock(monkeypatch, timed)
    fast = _tiny_fast(cfg_dir, expected_calls=None)
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        for _ in range(fastconv.MEASURE_AFTER_CALLS - 1):
            fast(x)
        assert timed == []
        fast(x)  # the MEASURE_AFTER_CALLS-th call of this shape: measuring starts
    first_conv = fast.module_list[0]
    assert timed and timed[0] == "plain" and set(first_conv.__dict__["_trials"]) == {first_conv._shape_key(x)}


def test_measured_choices_are_stored_and_the_next_process_uses_them_without_measuring(cfg_dir, monkeypatch,
                                                                                     fresh_measurements):
    timed = []
    _scripted_clock(monkeypatch, timed)
    fast = _tiny_fast(cfg_dir, expected_calls=1000)
    x = torch.rand(1, 3, 96, 96)
    with torch.inference_mode():
        for _ in range(12):
            fast(x)
    stored = json.loads(fresh_measurements.read_text())
    assert stored["format"] == prepcache.FORMAT and stored["machine"] == prepcache.machine_key()
    keys = {key for m in fast.module_list if isinstance(m, FastConvLayer) for key in m.__dict__["_methods"]}
    assert len(keys) == len(stored["choices"]) > 0 and keys == set(stored["choices"])
    assert set(stored["choices"].values()) <= set(prepcache.METHODS)
    # a new process: nothing in memory, the same file
    monkeypatch.setattr(fastconv, "_MEASURED_METHODS", {})
    monkeypatch.setattr(fastconv, "_PREP_CACHE", None)
    timed.clear()
    again = _tiny_fast(cfg_dir, expected_calls=1000)
    with torch.inference_mode():
        again(x)
    assert timed == []
    chosen = {key: m.__dict__["_methods"][key] for m in again.module_list if isinstance(m, FastConvLayer)
              for key in m.__dict__.get("_methods", {})}
    assert chosen and all(stored["choices"][key] == method for key, method in chosen.items())


def test_known_choices_wait_for_a_job_long_enough_to_win_back_their_preparation(cfg_dir, monkeypatch,
                                                                                  fresh_measurements):
    """A stored choice is used from the first call by a job of USE_KNOWN_MIN_CALLS calls or more, never by a shorter
    one, after USE_KNOWN_MIN_CALLS calls by a job of unknown length; a job shorter than JOB_MIN_CALLS never
    measures a shape nothing is known about."""
    timed = []
    _scripted_clock(monkeypatch, timed)
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        measured = _tiny_fast(cfg_dir, expected_calls=fastconv.JOB_MIN_CALLS)
        for _ in range(12):
            measured(x)
    stored = json.loads(fresh_measurements.read_text())["choices"]
    assert "winograd4" in stored.values()  # something a fast path runs, so that using it shows

    def fast_paths_used(model):
        return any(m.__dict__.get("_fast_cache") for m in model.module_list)

    for expected, calls, uses in [(fastconv.USE_KNOWN_MIN_CALLS - 1, 30, False),
                                  (fastconv.USE_KNOWN_MIN_CALLS, 1, True),
                                  (None, fastconv.USE_KNOWN_MIN_CALLS - 1, False),
                                  (None, fastconv.USE_KNOWN_MIN_CALLS, True)]:
        monkeypatch.setattr(fastconv, "_MEASURED_METHODS", {})
        monkeypatch.setattr(fastconv, "_PREP_CACHE", None)  # a new process, the same file
        timed.clear()
        model = _tiny_fast(cfg_dir, expected_calls=expected)
        with torch.inference_mode():
            for _ in range(calls):
                model(x)
        assert fast_paths_used(model) == uses, (expected, calls)
        assert timed == []  # known: nothing measured
    fresh_measurements.unlink()
    monkeypatch.setattr(fastconv, "_PREP_CACHE", None)
    monkeypatch.setattr(fastconv, "_MEASURED_METHODS", {})
    model = _tiny_fast(cfg_dir, expected_calls=fastconv.JOB_MIN_CALLS - 1)
    with torch.inference_mode():
        for _ in range(fastconv.JOB_MIN_CALLS):
            model(x)
    assert timed == [] and not fast_paths_used(model)


def test_a_trial_drops_a_hopeless_candidate_and_winograd_is_not_measured_on_thin_convs():
    trial = fastconv._Trial(["plain", "onednn", "winograd4"])
    for _ in range(1 + fastconv.MEASURE_REPEATS):  # plain: untimed, then timed
        trial.record(1.0)
    assert trial.method == "onednn"
    trial.record(fastconv.ABANDON_FACTOR * 1.0 + 0.1)  # its untimed call: hopeless, no timed call
    assert trial.method == "winograd4"
    trial.record(2.0)
    for _ in range(fastconv.MEASURE_REPEATS):
        trial.record(0.5)
    assert trial.done and trial.winner() == "winograd4" and "onednn" not in trial.best
    for channels, winograd in [(fastconv.WINOGRAD_MIN_CHANNELS - 1, False), (fastconv.WINOGRAD_MIN_CHANNELS, True)]:
        conv = torch.nn.Conv2d(channels, channels, 3, 1, 1)
        layer = FastConvLayer(conv, "leaky", onednn=True, winograd=True, select="measure")
        candidates = layer._candidates(torch.rand(1, channels, 16, 16))
        assert ("winograd4" in candidates) == winograd and candidates[0] == "plain"


@pytest.mark.parametrize("activation, reference", [
    ("leaky", lambda y: F.leaky_relu(y, 0.1)), ("linear", lambda y: y), ("relu", F.relu),
    ("logistic", torch.sigmoid)])
def test_every_darknet_activation_in_the_plain_and_the_onednn_conv(activation, reference):
    # the shipped cfgs use leaky and linear only; a user's cfg may use relu or logistic
    torch.manual_seed(0)
    layer = ConvLayer(8, 16, 3, 1, 1, batch_normalize=False, activation=activation).eval()
    x = (torch.rand(1, 8, 12, 12) - 0.5).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        before = F.conv2d(x, layer.conv.weight, layer.conv.bias, 1, 1)
        assert (before < 0).any() and (before > 0).any()  # both signs reach the activation
        expected = reference(before)
        torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)
        if torch.backends.mkldnn.is_available():
            got = fastconv.onednn_convolution(x, fastconv.onednn_weight(layer.conv, tuple(x.shape)), layer.conv.bias,
                                              layer.conv, activation)
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def _write_choices(path, machine, choices):
    path.write_text(json.dumps({"format": prepcache.FORMAT, "version": prepcache.VERSION, "machine": machine,
                                "choices": choices}))


@pytest.mark.parametrize("content, note", [
    ("{not json", "not valid JSON"),
    (json.dumps({"choices": {"x": "plain"}}), "not a yolov3-focal preparation cache"),
    (json.dumps(["a", "list"]), "not a yolov3-focal preparation cache"),
])
def test_a_corrupt_or_foreign_cache_file_is_ignored_with_a_note_and_left_alone(cfg_dir, monkeypatch, capsys,
                                                                                fresh_measurements, content, note):
    fresh_measurements.write_text(content)
    timed = []
    _scripted_clock(monkeypatch, timed)
    fast = _tiny_fast(cfg_dir, expected_calls=1000)
    with torch.inference_mode():
        for _ in range(12):
            fast(torch.rand(1, 3, 64, 64))
    assert timed  # measured, as with no file
    err = capsys.readouterr().err
    assert err.count("note:") == 1 and note in err and str(fresh_measurements) in err
    assert fresh_measurements.read_text() == content  # maybe a user's own file: never overwritten


def test_cache_keys_tell_apart_what_a_measured_choice_depends_on(cfg_dir, tmp_path, monkeypatch):
    """The machine key differs for another CPU model or flag set; the shape key for another batch, spatial size,
    layout, dtype, thread count or malloc setting: a choice measured under one of them is not reused under another."""
    info = "processor\t: 0\nmodel name\t: {model}\nflags\t\t: fpu sse2 avx2{extra}\n"
    keys = {}
    for name, model, extra in (("a", "CPU A", ""), ("a_again", "CPU A", ""), ("b", "CPU B", ""),
                               ("a_avx512", "CPU A", " avx512f")):
        (tmp_path / name).write_text(info.format(model=model, extra=extra))
        keys[name] = prepcache.machine_key(str(tmp_path / name))
    assert keys["a"] == keys["a_again"]
    assert keys["b"]["cpu"] != keys["a"]["cpu"] and keys["b"]["cpu_flags"] == keys["a"]["cpu_flags"]
    assert keys["a_avx512"]["cpu_flags"] != keys["a"]["cpu_flags"] and keys["a_avx512"]["cpu"] == keys["a"]["cpu"]
    assert keys["a"]["torch"] == torch.__version__

    conv = _tiny_fast(cfg_dir, expected_calls=0).module_list[0]
    nhwc = torch.rand(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    base = conv._shape_key(nhwc)
    others = [conv._shape_key(torch.rand(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)),
              conv._shape_key(torch.rand(1, 3, 64, 96).contiguous(memory_format=torch.channels_last)),
              conv._shape_key(torch.rand(1, 3, 64, 64)),  # NCHW
              conv._shape_key(nhwc.bfloat16())]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        others.append(conv._shape_key(nhwc))
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setattr(memory, "state", "kept" if memory.state == "default" else "default")
    others.append(conv._shape_key(nhwc))  # a process that keeps freed memory (or not): another measurement
    monkeypatch.undo()
    assert conv._shape_key(nhwc.clone()) == base and len({base, *others}) == 1 + len(others)


def test_a_stale_cache_forces_a_new_measurement_and_is_replaced(cfg_dir, monkeypatch, capsys, fresh_measurements):
    """Choices stored for another CPU or torch are not used: the conv measures again and the file is rewritten for
    this machine. A stored choice for a path this build cannot take is measured again too."""
    x = torch.rand(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    probe = _tiny_fast(cfg_dir, expected_calls=0)
    key = probe.module_list[0]._shape_key(x)
    other = {**prepcache.machine_key(), "torch": "1.0.0"}
    _write_choices(fresh_measurements, other, {key: "onednn"})
    timed = []
    _scripted_clock(monkeypatch, timed)
    fast = _tiny_fast(cfg_dir, expected_calls=1000)
    with torch.inference_mode():
        fast(x)
    assert timed  # measuring, not the stored choice
    assert "another machine or torch" in capsys.readouterr().err
    with torch.inference_mode():
        for _ in range(12):
            fast(x)
    stored = json.loads(fresh_measurements.read_text())
    # SPEED's pick for a 3x3 conv without Winograd among its candidates (3 input channels: too thin to measure it)
    assert stored["machine"] == prepcache.machine_key() and stored["choices"][key] == "onednn"
    # this machine's file, but a stored path a conv cannot take (Winograd for a 1x1 conv): measured again
    one_by_one = next(m for m in fast.module_list if isinstance(m, FastConvLayer) and m.conv.kernel_size == (1, 1))
    seen = []
    handle = one_by_one.register_forward_pre_hook(lambda module, args: seen.append(module._shape_key(args[0])))
    with torch.inference_mode():
        fast(x)
    handle.remove()
    _write_choices(fresh_measurements, prepcache.machine_key(), {seen[0]: "winograd4"})
    monkeypatch.setattr(fastconv, "_MEASURED_METHODS", {})
    monkeypatch.setattr(fastconv, "_PREP_CACHE", None)
    fresh = _tiny_fast(cfg_dir, expected_calls=1000)
    timed.clear()
    with torch.inference_mode():
        fresh(x)
    fresh_one = next(m for m in fresh.module_list if isinstance(m, FastConvLayer) and m.conv.kernel_size == (1, 1))
    assert seen[0] in fresh_one.__dict__.get("_trials", {})  # measuring it, not running Winograd on a 1x1 conv


def test_prep_cache_modes_off_and_clear(cfg_dir, monkeypatch, fresh_measurements, capsys):
    _write_choices(fresh_measurements, prepcache.machine_key(), {})
    assert fastconv.use_prep_cache("off") is None
    assert fresh_measurements.exists()  # off: neither read nor written, nor deleted
    assert fastconv.use_prep_cache("clear") is not None and not fresh_measurements.exists()
    fresh_measurements.write_text("mine, not a cache\n")
    fastconv.use_prep_cache("clear")
    assert fresh_measurements.exists() and "not deleted" in capsys.readouterr().err  # maybe the user's own
    monkeypatch.setenv("YOLOV3_PREP_CACHE", "off")
    assert prepcache.default_path() is None
    with pytest.raises(ValueError, match="--prep-cache must be one of use, off, clear"):
        fastconv.use_prep_cache("never")


def test_select_is_checked(cfg_dir):
    with pytest.raises(ValueError, match="select must be 'measure' or 'rule'"):
        Darknet(cfg_dir / "yolov3-tiny.cfg").optimize_for_inference(select="fast")


def test_machine_key_digests_the_sorted_flags_and_names_the_onednn_build(tmp_path):
    import hashlib

    flags = [f"f{i:02d}" for i in range(20)]
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: " + " ".join(reversed(flags)) + "\n")
    key = prepcache.machine_key(str(tmp_path / "cpuinfo"))
    # a set's order changes with each process's hash seed: only the sorted flags give a digest stable across processes
    assert key["cpu_flags"] == hashlib.sha256(" ".join(flags).encode()).hexdigest()[:16]
    version = getattr(torch.backends.mkldnn, "version", None)
    assert key["onednn"] == (str(version()) if callable(version) else "unknown")


def test_a_cache_of_another_onednn_or_format_version_is_not_used(tmp_path, capsys):
    path = tmp_path / "cache.json"
    _write_choices(path, {**prepcache.machine_key(), "onednn": "0.0"}, {"k": "onednn"})
    assert prepcache.PrepCache(path).get("k") is None
    path.write_text(json.dumps({"format": prepcache.FORMAT, "version": prepcache.VERSION + 1,
                                "machine": prepcache.machine_key(), "choices": {"k": "onednn"}}))
    assert prepcache.PrepCache(path).get("k") is None
    assert f"preparation cache of another version ({prepcache.VERSION + 1})" in capsys.readouterr().err
    _write_choices(path, prepcache.machine_key(), {"k": "onednn"})
    assert prepcache.PrepCache(path).get("k") == "onednn"  # the same file for this machine: used


def test_the_cache_lives_under_xdg_cache_home_when_it_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv("YOLOV3_PREP_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert prepcache.default_path() == tmp_path / "yolov3-focal" / "prep-cache.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert prepcache.default_path() == tmp_path / "home" / ".cache" / "yolov3-focal" / "prep-cache.json"


@pytest.mark.parametrize("stride, padding, channels, size", [(2, 1, 64, 64), (1, 0, 128, 32)])
def test_winograd_computes_only_stride_one_padding_one_convs(stride, padding, channels, size):
    """A stride-2 or unpadded 3x3 conv big enough for the rule to prefer Winograd still gives the plain conv's
    output: Winograd here computes stride 1 with padding 1, so it must not be chosen for them."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(channels, 128, 3, stride, padding)
    layer = FastConvLayer(conv, "linear", onednn=False, winograd=True, select="rule").eval()
    x = torch.rand(1, channels, size, size)
    with torch.no_grad():
        expected = conv(x)
        got = layer(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


# ---- planted-bug checks: shape keys, switched-off paths, autocast, the job rules and the trial ---------------------
def test_shape_keys_name_stride_and_padding_and_switched_off_paths_are_never_candidates():
    x = torch.rand(1, 64, 16, 16)
    keys = {FastConvLayer(torch.nn.Conv2d(64, 64, 3, stride, pad), "leaky", False, True, "measure")._shape_key(x)
            for stride, pad in ((1, 1), (2, 1), (1, 0))}
    assert len(keys) == 3
    off = FastConvLayer(torch.nn.Conv2d(8, 16, 3, 1, 1), "leaky", onednn=False, winograd=True, select="rule")
    assert off._rule_method(torch.rand(1, 8, 12, 12)) == "plain"
    measured = FastConvLayer(torch.nn.Conv2d(8, 16, 3, 1, 1), "leaky", onednn=False, winograd=True, select="measure")
    assert measured._candidates(torch.rand(1, 8, 12, 12)) == ["plain"]


@pytest.mark.skipif(not fastconv.onednn_available(), reason="this torch build has no oneDNN")
def test_onednn_runs_without_winograd_and_autocast_takes_the_plain_path():
    layer = FastConvLayer(torch.nn.Conv2d(8, 16, 3, 1, 1), "leaky", onednn=True, winograd=False, select="rule").eval()
    with torch.no_grad():
        layer(torch.rand(1, 8, 12, 12))
    assert "onednn" in layer.__dict__.get("_fast_cache", {})
    big = FastConvLayer(torch.nn.Conv2d(128, 128, 3, 1, 1), "leaky", True, True, "rule").eval()
    x = torch.rand(1, 128, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = big(x)
        expected = F.leaky_relu(big.conv(x), 0.1)
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)


def test_the_job_length_rules_and_the_trial_as_documented(monkeypatch):
    assert fastconv.start_calls(29) == (1, None) and fastconv.start_calls(30) == (1, 1)  # measure from 30 passes
    assert fastconv.start_calls(9) == (None, None) and fastconv.start_calls(10) == (1, None)  # plain below 10
    assert fastconv.start_calls(None) == (10, 30)  # a stream: known choices after 10 frames, measuring after 30
    trial = fastconv._Trial(["plain", "onednn"])
    trial.record(1.0)
    trial.record(1.0)
    assert trial.method == "plain"  # one untimed call and two timed ones per candidate
    trial.record(1.0)
    assert trial.method == "onednn"
    fastest = fastconv._Trial(["plain", "onednn"])
    for seconds in (9.0, 1.0, 5.0, 2.0, 2.0, 2.0):
        fastest.record(seconds)
    assert fastest.done and fastest.winner() == "plain"  # the fastest timed call decides, not the last
    hopeless = fastconv._Trial(["plain", "onednn", "winograd4"])
    for seconds in (1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 4.0):
        hopeless.record(seconds)
    assert hopeless.done and "winograd4" not in hopeless.best  # 4 > 3 x the best so far: dropped untimed
    monkeypatch.setattr(fastconv, "_MEASURED_METHODS", {"k": "winograd4"})
    monkeypatch.setattr(fastconv, "_PREP_CACHE", None)
    fastconv.use_prep_cache("off")
    assert fastconv._MEASURED_METHODS == {}
    import detect
    import val

    assert detect.parse_args(["--weights", "w.pt", "--source", "x.jpg"]).prep_cache == "use"
    assert val.parse_args(["--data", "d.yaml", "--weights", "w.pt"]).prep_cache == "use"


def test_prep_cache_env_forms_new_folders_and_foreign_json_kept(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("YOLOV3_PREP_CACHE", "OFF")
    assert prepcache.default_path() is None
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("YOLOV3_PREP_CACHE", "~/pc.json")
    assert prepcache.default_path() == tmp_path / "pc.json"
    older = tmp_path / "old.json"
    older.write_text(json.dumps({"format": prepcache.FORMAT, "version": prepcache.VERSION - 1,
                                 "machine": prepcache.machine_key(), "choices": {"k": "onednn"}}))
    assert prepcache.PrepCache(older).get("k") is None
    assert f"preparation cache of another version ({prepcache.VERSION - 1})" in capsys.readouterr().err
    deep = prepcache.PrepCache(tmp_path / "a" / "b" / "c.json", machine={"cpu": "x"})
    deep.put("k", "plain")
    assert json.loads((tmp_path / "a" / "b" / "c.json").read_text())["choices"] == {"k": "plain"}
    mine = tmp_path / "mine.json"
    mine.write_text('{"mine": 1}')
    assert prepcache.clear(mine) is False and mine.exists()


def test_arm_features_line_and_the_usable_cpus_make_the_cpu_key(tmp_path, monkeypatch):
    import os

    from yolov3.precision import cpu_flags_and_model, cpu_info

    (tmp_path / "arm").write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd bf16\n\n")
    (tmp_path / "arm2").write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\n\n")
    assert cpu_flags_and_model(str(tmp_path / "arm"))[0] == {"fp", "asimd", "bf16"}
    assert prepcache.machine_key(str(tmp_path / "arm"))["cpu_flags"] != \
        prepcache.machine_key(str(tmp_path / "arm2"))["cpu_flags"]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert cpu_info(str(tmp_path / "arm")).cores == 1  # the CPUs this process may use


def test_the_plain_inference_model_is_fused_eval_and_channels_last(cfg_dir):
    from yolov3.model import prepare_for_inference

    model = prepare_for_inference(Darknet(cfg_dir / "yolov3-tiny.cfg"), optimize=False)
    assert model.is_fused and not model.training
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)


def test_a_job_too_short_for_the_fast_path_gets_the_plain_model(cfg_dir):
    from yolov3.model import prepare_for_inference

    short = fastconv.USE_KNOWN_MIN_CALLS - 1
    assert [fastconv.fast_path_can_pay(n) for n in (0, 1, short, short + 1, None)] == [False] * 3 + [True] * 2
    for calls, fast in ((1, 0), (short, 0), (short + 1, 13), (None, 13)):  # yolov3-tiny's 13 convs
        model = prepare_for_inference(Darknet(cfg_dir / "yolov3-tiny.cfg"), expected_calls=calls)
        assert model.is_fused and not model.training
        assert sum(isinstance(m, FastConvLayer) for m in model.module_list) == fast, calls
