"""The compile option's default: on for CUDA devices only where Triton finds a C compiler."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from service_kit.models.compiling import c_compiler, compile_by_default


def _no_compiler(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no gcc, no clang


def test_without_a_c_compiler_compile_is_off_on_cuda_and_the_log_says_how_to_fix_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _no_compiler(monkeypatch, tmp_path)
    assert c_compiler() is None
    with caplog.at_level(logging.WARNING, logger="service_kit.models.compiling"):
        assert not compile_by_default("cuda:0")
    assert "no C compiler" in caplog.text and "install gcc" in caplog.text


def test_a_compiler_on_path_or_in_cc_turns_compile_on_for_cuda_devices_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_compiler(monkeypatch, tmp_path)
    gcc = tmp_path / "gcc"
    gcc.write_text("#!/bin/sh\n")
    gcc.chmod(0o755)
    assert c_compiler() == str(gcc)
    assert compile_by_default("cuda:0")
    assert compile_by_default("cuda:3")
    assert not compile_by_default("cpu")
    assert not compile_by_default("cuda:0", deterministic=True)
    gcc.unlink()
    monkeypatch.setenv("CC", "/opt/toolchain/bin/cc")  # Triton takes CC as it is
    assert c_compiler() == "/opt/toolchain/bin/cc"
    assert compile_by_default("cuda:0")
