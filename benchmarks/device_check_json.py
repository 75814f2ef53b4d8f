"""JSON helper for ``benchmarks/device_check.sh``.

    python benchmarks/device_check_json.py device DEVICE_JSON
        prints the JAX backend and devices and writes them (with package versions) to DEVICE_JSON;
    python benchmarks/device_check_json.py assemble OUT DEVICE_JSON STEPS_TSV MODE
        collects the steps (one tab-separated line each: name, required|informational, exit
        status or "skip", wall seconds, result (a JSON file, "stdout" = the JSON at the end of the step's
        stdout, or "-"), log stem, command, note) into one JSON file, the benchmarks' result
        files embedded.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path


def device(path: str) -> None:
    import jax
    devices = jax.devices()
    info = {"backend": jax.default_backend(), "device_count": len(devices),
            "devices": [{"id": d.id, "platform": d.platform, "kind": d.device_kind, "str": str(d)} for d in devices],
            "host": {"machine": platform.machine(), "processor": platform.processor(), "python": platform.python_version()},
            "versions": {}}
    for pkg in ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "libtpu", "numpy", "torch",
                "transformers", "scikit-learn", "jaxasr_interp"):
        try:
            info["versions"][pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    try:  # GPU name, memory and driver, where nvidia-smi exists
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        if smi.returncode == 0:
            info["nvidia_smi"] = smi.stdout.strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        pass
    Path(path).write_text(json.dumps(info, indent=2) + "\n")
    print(f"backend: {info['backend']}")
    for d in info["devices"]:
        print(f"  device {d['id']}: {d['kind']} ({d['str']})")


def trailing_json(text: str):
    """The JSON object that ends a benchmark's stdout (one that prints it with indent=2)."""
    lines = text.rstrip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i] == "{":
            return json.loads("\n".join(lines[i:]))
    raise ValueError("no JSON object at the end of stdout")


def tail(path: Path, n: int) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-n:] if path.exists() else []


def assemble(out: str, device_json: str, steps_tsv: str, mode: str) -> None:
    steps, required_failed = [], []
    for line in Path(steps_tsv).read_text().splitlines():
        name, kind, rc, wall, result, log, command, note = line.split("\t")
        if rc == "skip":
            steps.append({"name": name, "status": "skipped", "note": note})
            continue
        rc = int(rc)
        step = {"name": name, "required": kind == "required", "exit_status": rc,
                "status": "passed" if rc == 0 else "timed out" if rc in (124, 137) else "failed",
                "wall_s": float(wall), "command": command}
        if note:
            step["note"] = note
        stdout, stderr = Path(log + ".out"), Path(log + ".err")
        if "-m pytest" in command:
            step["summary"] = (tail(stdout, 1) or [""])[0]
        if result != "-" and rc == 0:
            try:
                step["result"] = (trailing_json(stdout.read_text()) if result == "stdout"
                                  else json.loads(Path(result).read_text()))
            except (OSError, ValueError) as err:
                step["result_error"] = str(err)
        if rc != 0:
            step["output_tail"] = tail(stdout, 40) + tail(stderr, 15)
            if step["required"]:
                required_failed.append(name)
        steps.append(step)
    try:
        dev = json.loads(Path(device_json).read_text())
    except (OSError, ValueError):
        dev = {"error": "the device step wrote nothing"}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    report = {"check": "benchmarks/device_check.sh", "mode": mode, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "git_commit": commit or "unknown", "device": dev,
              "precision": "pytest steps run with JAX_DEFAULT_MATMUL_PRECISION=highest (test-side JAX ops too); "
                           "benchmarks run at the library's defaults: the model's precision='highest'; the probe "
                           "sweep sets none, so it runs at the backend's default matmul precision",
              "ok": not required_failed, "required_failed": required_failed, "steps": steps}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    for s in steps:
        flag = "" if s.get("required", True) else " (informational)"
        print(f"  {s['name']:<24} {s['status']:<9} {s.get('wall_s', 0):7.1f} s{flag}  {s.get('summary', '')}")


if __name__ == "__main__":
    {"device": device, "assemble": assemble}[sys.argv[1]](*sys.argv[2:])
