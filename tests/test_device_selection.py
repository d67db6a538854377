"""Device and dtype choice. A GPU cannot exist here, so its presence is the one thing faked."""
import pytest
import torch

from inference import EngineError
from inference import device
from inference.device import resolve_device, resolve_dtype

device_module_check = device.cpu_has_native_bf16


def test_auto_is_the_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_on_the_cpu_is_bf16_only_where_the_cpu_does_bf16_natively(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    for flags, dtype in (("fpu avx2 avx512f", torch.float32), ("fpu avx512f avx512_bf16 avx512_vnni", torch.bfloat16),
                         ("fpu amx_bf16 amx_tile", torch.bfloat16)):
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: device_module_check(cpuinfo))
        assert resolve_dtype("auto", torch.device("cpu")) == dtype, flags
    assert not device_module_check(tmp_path / "absent")  # no /proc/cpuinfo (not Linux): fp32


def test_a_requested_gpu_that_is_absent_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EngineError, match="torch sees no GPU"):
        resolve_device("cuda:0")


def test_auto_pins_cuda_0_in_bf16_when_a_gpu_is_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    device = resolve_device("auto")
    assert device == torch.device("cuda:0")
    assert resolve_dtype("auto", device) == torch.bfloat16
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(EngineError, match="only 2 GPU"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "tpu:0"])
def test_it_rejects_unknown_devices(bad):
    with pytest.raises(EngineError, match="device must be"):
        resolve_device(bad)


def test_fp32_can_be_forced_and_unknown_dtypes_are_refused():
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(EngineError, match="dtype must be one of"):
        resolve_dtype("int3", torch.device("cpu"))
