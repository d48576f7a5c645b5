"""Precision resolution: what train.amp means on a given device and CPU, read from the CPU's flags."""
import pytest
import torch

from yolov3.precision import CpuInfo, cpu_info, describe_cpu, resolve_precision

CPU = torch.device("cpu")
BF16_CPU = CpuInfo(model="Xeon", cores=2, isa="AVX512", avx512=True, native_bf16=True, amx=True)
AVX2_CPU = CpuInfo(model="EPYC", cores=2, isa="AVX2", avx512=False, native_bf16=False, amx=False)
# AVX-512 without bf16 (Skylake, Cascade Lake): bf16 is emulated there as on AVX2
AVX512_CPU = CpuInfo(model="Xeon Gold 6148", cores=2, isa="AVX512", avx512=True, native_bf16=False, amx=False)


@pytest.mark.parametrize("mode, info, name", [
    ("auto", BF16_CPU, "bf16"),  # native bf16: autocast pays (2-2.7x per step measured)
    ("auto", AVX2_CPU, "fp32"),  # emulated bf16 would be slower than fp32
    ("auto", AVX512_CPU, "fp32"),
    ("off", BF16_CPU, "fp32"),
    ("bf16", AVX2_CPU, "bf16"),  # asked for explicitly (to reproduce a bf16 run): honoured
])
def test_resolve_precision_on_cpu(mode, info, name):
    precision = resolve_precision(mode, CPU, info)
    assert precision.name == name and not precision.scaler
    assert precision.dtype == {"bf16": torch.bfloat16, "fp32": None}[name]


def test_bf16_asked_for_on_a_cpu_without_it_warns_that_it_is_emulated_and_slow():
    assert resolve_precision("bf16", CPU, BF16_CPU).reason == "asked for"
    reason = resolve_precision("bf16", CPU, AVX2_CPU).reason
    assert "WARNING" in reason and "no native bf16" in reason and "slower than in fp32" in reason


def test_fp16_and_unknown_modes_are_errors_naming_the_key():
    with pytest.raises(ValueError, match="'train.amp' fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU, BF16_CPU)
    with pytest.raises(ValueError, match="'train.amp' must be one of auto, off, bf16, fp16, got 'half'"):
        resolve_precision("half", CPU, BF16_CPU)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    text = ("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\n"
            "processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    (tmp_path / "cpuinfo").write_text(text)
    info = cpu_info(str(tmp_path / "cpuinfo"))
    assert (info.model, info.avx512, info.native_bf16, info.amx) == ("Test CPU 9000", True, True, False)
    (tmp_path / "avx2").write_text(text.replace(" avx512f avx512_bf16", ""))
    plain = cpu_info(str(tmp_path / "avx2"))
    assert not plain.avx512 and not plain.native_bf16
    assert describe_cpu(plain).startswith("Test CPU 9000, ") and describe_cpu(plain).endswith("no native bf16")
    assert not cpu_info(str(tmp_path / "missing")).native_bf16  # no /proc (macOS, Windows): never assume bf16
    (tmp_path / "skylake").write_text(text.replace(" avx512_bf16", ""))  # AVX-512 alone is not bf16
    skylake = cpu_info(str(tmp_path / "skylake"))
    assert (skylake.avx512, skylake.native_bf16, skylake.amx) == (True, False, False)
    (tmp_path / "amx").write_text(text.replace(" avx512_bf16", " amx_bf16 amx_tile"))  # AMX alone is
    assert (cpu_info(str(tmp_path / "amx")).native_bf16, cpu_info(str(tmp_path / "amx")).amx) == (True, True)


def test_on_a_gpu_fp16_gets_a_gradient_scaler_and_bf16_none(monkeypatch):
    cuda = torch.device("cuda")  # resolving touches no CUDA code, except asking the GPU about bf16
    assert resolve_precision("fp16", cuda).scaler and resolve_precision("fp16", cuda).name == "fp16"
    assert not resolve_precision("bf16", cuda).scaler and resolve_precision("bf16", cuda).name == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100
    auto = resolve_precision("auto", cuda)
    assert (auto.name, auto.scaler) == ("fp16", True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert (resolve_precision("auto", cuda).name, resolve_precision("auto", cuda).scaler) == ("bf16", False)


def test_legacy_boolean_amp_and_cache_in_saved_configs():
    from yolov3.config import ConfigError, from_dict, validate

    old = from_dict({"train": {"amp": True, "cache": False}})
    assert (old.train.amp, old.train.cache) == ("auto", "off")
    newer = from_dict({"train": {"amp": False, "cache": True}})
    assert (newer.train.amp, newer.train.cache) == ("off", "ram")  # cache: true kept images in RAM
    with pytest.raises(ConfigError, match="'train.amp' must be one of auto, off, bf16, fp16"):
        validate(from_dict({"train": {"amp": "half"}}))


def test_environment_records_torchs_thread_count_and_the_bf16_note_says_which_cpu_kind():
    from yolov3.precision import bf16_inference_note, environment_record

    previous = torch.get_num_threads()
    threads = cpu_info().cores + 1
    torch.set_num_threads(threads)
    try:
        record = environment_record(torch.device("cpu"), resolve_precision("off", torch.device("cpu")))
    finally:
        torch.set_num_threads(previous)
    assert record["threads"] == threads
    assert bf16_inference_note(torch.device("cpu"), AVX2_CPU).startswith(
        "warning: --bf16 on a CPU without native bf16 (EPYC, 2 cores, AVX2, no native bf16)")
    assert bf16_inference_note(torch.device("cpu"), BF16_CPU) == \
        "precision: bf16 autocast (native on this CPU: Xeon, 2 cores, AVX512, native bf16 (AMX))"
