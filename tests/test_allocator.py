"""bundle.allocator: glibc keeps freed memory for reuse once the training or inference config asks for it."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc settings"
)

# a fresh process: run a setup line, then allocate and free a 64 MB block twice; report what the setup returned,
# glibc's count of mmapped blocks while the first block is alive (mallinfo2) and whether the second block reused the
# first one's address
_PROBE = """
import ctypes, json, sys
sys.path.insert(0, {root!r})
import bundle
import bundle.config
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
applied = {setup}
before = libc.mallinfo2().hblks
first = libc.malloc(64 << 20)
during = libc.mallinfo2().hblks
libc.free(first)
second = libc.malloc(64 << 20)
libc.free(second)
print(json.dumps({{"applied": applied, "mmapped_blocks_added": during - before, "reused": first == second}}))
"""


def _probe(setup: str) -> dict:
    code = _PROBE.format(root=str(ROOT), setup=setup)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_large_blocks_come_from_the_heap_and_are_reused():
    result = _probe("bundle.allocator.reuse_freed_memory(True)")
    assert result == {"applied": True, "mmapped_blocks_added": 0, "reused": True}


def test_disabled_leaves_glibc_mapping_large_blocks():
    """The control: without the setting glibc maps a 64 MB block on its own (so the test above can fail)."""
    result = _probe("bundle.allocator.reuse_freed_memory(False)")
    assert result["applied"] is False and result["mmapped_blocks_added"] == 1


def test_training_config_applies_it_by_default():
    from bundle.config import bundle_parser

    parser = bundle_parser(ROOT, "lgg", "train")
    assert parser.get_parsed_content("reuse_freed_memory") is True
    assert any("bundle.allocator.reuse_freed_memory(@reuse_freed_memory)" in str(line)
               for line in parser["initialize"])


@pytest.mark.parametrize("overrides, mapped", [({}, 0), ({"reuse_freed_memory": False}, 1)])
def test_inference_config_sets_the_process_allocator(overrides, mapped):
    """What the predictor, the segmenter and MONAI Label load (``inference_parser``) applies the setting to the
    process by default, and ``reuse_freed_memory false`` leaves glibc mapping a 64 MB block on its own."""
    result = _probe(f"bundle.config.inference_parser({str(ROOT)!r}, 'lgg', overrides={overrides!r}) and None")
    assert result["mmapped_blocks_added"] == mapped
