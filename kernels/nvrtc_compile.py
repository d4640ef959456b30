"""Compiles one CUDA C file to PTX with NVRTC (libnvrtc from the pinned wheel), for compute_80.

usage: nvrtc_compile.py LIBNVRTC SRC.cu OUT.ptx
NVRTC is deterministic for a given source and options; the options are fixed here so that the committed
PTX is reproduced byte for byte. No host compiler and no CUDA headers are involved: the sources use only
builtins and inline PTX.
"""
import ctypes
import os
import sys

OPTIONS = [b"--gpu-architecture=compute_80", b"--std=c++17"]


def check(lib, status, what):
    if status != 0:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise SystemExit(f"nvrtc {what}: {lib.nvrtcGetErrorString(status).decode()}")


def main():
    libpath, src, out = sys.argv[1:4]
    lib = ctypes.CDLL(libpath)
    with open(src, "rb") as f:
        code = f.read()
    prog = ctypes.c_void_p()
    name = os.path.basename(src).encode()
    check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), code, name, 0, None, None), "create")
    options = OPTIONS + [b"--include-path=" + os.path.dirname(os.path.abspath(src)).encode()]
    opts = (ctypes.c_char_p * len(options))(*options)
    status = lib.nvrtcCompileProgram(prog, len(options), opts)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    if log.value.strip():
        sys.stderr.write(log.value.decode())
    check(lib, status, f"compile {src}")
    lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    check(lib, lib.nvrtcGetPTX(prog, ptx), "get ptx")
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(ptx.value)
    os.replace(tmp, out)


main()
