#!/usr/bin/env python3
"""`helm lint` of a chart, for tests/deploy/helm.rs, with Helm's own code: the Helm v4 Go library
that PyPI's helm-sdkpy ships as a shared library (no helm command is packaged for Debian 12,
npm or PyPI). It is loaded with ctypes, so its Python API (Python 3.12+, cffi) is not used:
scripts/test installs it with `pip install --no-deps --ignore-requires-python helm-sdkpy`.

usage: helm_lint.py CHART_DIR     lint the chart with its own values.yaml
       helm_lint.py --version     print the library's version

Prints one JSON object: {"library": VERSION, "messages": [{"severity": N, "path": P}, ...]}
where severity is Helm's: 1 info, 2 warning, 3 error. (The library serialises each message's
error as {}, so the text is lost: the path and severity are what is left.)

Exit status: 0 linted (whatever it found); 3 helm-sdkpy is not installed (the command that
installs it on stderr: the test fails, it never skips); 1 the library failed.
"""

import ctypes
import importlib.util
import json
import os
import platform
import sys

INSTALL = "python3 -m pip install --no-deps --ignore-requires-python helm-sdkpy==0.1.32"
ARCH = {"x86_64": "linux-amd64", "aarch64": "linux-arm64"}


def library():
    spec = importlib.util.find_spec("helm_sdkpy")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        print(f"helm-sdkpy is not installed: run scripts/test, or {INSTALL}", file=sys.stderr)
        sys.exit(3)
    arch = ARCH.get(platform.machine(), platform.machine())
    path = os.path.join(spec.submodule_search_locations[0], "_lib", arch, "libhelm_sdkpy.so")
    lib = ctypes.CDLL(path)
    lib.helm_sdkpy_version_string.restype = ctypes.c_char_p
    lib.helm_sdkpy_last_error.restype = ctypes.c_char_p
    lib.helm_sdkpy_config_create.argtypes = [ctypes.c_char_p] * 4 + [
        ctypes.POINTER(ctypes.c_ulonglong)
    ]
    lib.helm_sdkpy_lint.argtypes = [
        ctypes.c_ulonglong,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_char_p),
    ]
    return lib


def fail(lib, what):
    error = lib.helm_sdkpy_last_error()
    print(f"{what} failed: {error.decode() if error else 'no error text'}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    lib = library()
    version = lib.helm_sdkpy_version_string().decode()
    if sys.argv[1] == "--version":
        print(version)
        return
    handle = ctypes.c_ulonglong()
    if lib.helm_sdkpy_config_create(b"default", None, None, b"{}", ctypes.byref(handle)) != 0:
        fail(lib, "helm configuration")
    out = ctypes.c_char_p()
    if lib.helm_sdkpy_lint(handle, sys.argv[1].encode(), ctypes.byref(out)) != 0:
        fail(lib, "helm lint")
    result = json.loads(out.value.decode())
    messages = [
        {"severity": m.get("Severity"), "path": m.get("Path")}
        for m in result.get("Messages") or []
    ]
    print(json.dumps({"library": version, "messages": messages}))


if __name__ == "__main__":
    main()
