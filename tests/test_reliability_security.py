"""Security: untrusted configs and checkpoints run no code, and W&B keys never reach a file.

- the W&B API key from the environment appears in no file written by `toolkit evaluate` or
  `toolkit pretrain` (outputs, run folders, W&B's offline files, its home/cache/config folders);
- a static scan of the package: no eval/exec, no unsafe YAML loading, no shell, and every
  ``torch.load`` passes ``weights_only=True``;
- YAML with Python tags is refused by `toolkit pretrain`, and the payload does not run;
- a pickle that runs code, given as `--resume` or `--wav2vec2`, is refused and does not run.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from reliability_support import REPO, cli_command, env, error_line, make_clips

from toolkit.cli import main

SECRET = "wandb-test-secret-7f3c9e1d5b2a4c6e8f0a1b3c5d7e9f11"
TINY = REPO / "toolkit/configs/pretrain/tiny.yaml"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    from training_support import make_shards

    return make_shards(tmp_path_factory.mktemp("data"), clips=4, seconds=0.6, max_count=4)


def files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                pass
    return hits


def test_wandb_key_is_never_written(tmp_path, shards):
    """The key is in the environment (as on a cluster); W&B runs offline; nothing written holds the key."""
    home = tmp_path / "home"
    home.mkdir()
    environ = env(WANDB_API_KEY=SECRET, WANDB_MODE="offline", HOME=str(home), TMPDIR=str(tmp_path / "tmp"),
                  WANDB_DIR=str(tmp_path / "wandb-dir"), WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"),
                  WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"), WANDB_DATA_DIR=str(tmp_path / "wandb-data"))
    (tmp_path / "tmp").mkdir()
    dataset = make_clips(tmp_path / "clips", 4)
    evaluation = subprocess.run(
        cli_command("evaluate", "random:tiny", "--dataset", f"csv:{dataset}", "--output", tmp_path / "eval",
                    "--draws", "1", "--bootstrap", "20", "--no-progress", "--device", "cpu", "--wandb-mode", "offline",
                    "--measures", "entropy.mean"),
        cwd=REPO, env=environ, capture_output=True, text=True, timeout=300)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    training = subprocess.run(
        cli_command("pretrain", "--config", TINY, "--data.train_shards", shards, "--trainer.default_root_dir",
                    tmp_path / "run", "--trainer.max_steps", "2", "--checkpoint.every_n_steps", "2",
                    "--logging.wandb", "offline"),
        cwd=REPO, env=environ, capture_output=True, text=True, timeout=300)
    assert training.returncode == 0, training.stderr[-3000:]
    # W&B really ran (offline) for both, and training wrote its checkpoint and logs
    assert list((tmp_path / "eval" / "wandb").glob("offline-run-*")), evaluation.stderr[-2000:]
    assert list((tmp_path / "run").rglob("offline-run-*")), training.stderr[-2000:]
    assert list((tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    written = sum(1 for p in tmp_path.rglob("*") if p.is_file())
    assert written > 20
    assert files_containing(tmp_path, SECRET.encode()) == []
    for process in (evaluation, training):
        assert SECRET not in process.stdout + process.stderr


# --- static scan of the package ------------------------------------------------------------------


def _calls(tree: ast.AST):
    """``(call, owner, name)``: owner ``None`` for a bare name (``eval(...)``), the module or object
    name for ``os.system(...)``, ``"?"`` for a method of an expression (``models[0].eval()``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                yield node, None, func.id
            elif isinstance(func, ast.Attribute):
                yield node, func.value.id if isinstance(func.value, ast.Name) else "?", func.attr


def _keyword(node: ast.Call, name: str):
    return next((k.value for k in node.keywords if k.arg == name), None)


def unsafe_calls(source: str, filename: str) -> tuple[list[str], int]:
    """The scan: ``(problems as "file:line: call", number of torch.load calls)`` in one source text."""
    tree = ast.parse(source, filename=filename)
    problems: list[str] = []
    torch_loads = 0
    for node, owner, name in _calls(tree):
        where = f"{filename}:{node.lineno}"
        if owner is None and name in ("eval", "exec", "compile", "__import__"):
            problems.append(f"{where}: {name}()")
        if owner == "os" and name in ("system", "popen") or owner == "pickle" and name in ("load", "loads"):
            problems.append(f"{where}: {owner}.{name}()")
        if owner == "yaml" and name in ("load", "load_all", "unsafe_load", "full_load", "unsafe_load_all"):
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            text = ast.unparse(loader) if loader is not None else ""
            if name != "load" and name != "load_all" or "SafeLoader" not in text:
                problems.append(f"{where}: yaml.{name}({text or 'no Loader'})")
        shell = _keyword(node, "shell")
        if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
            problems.append(f"{where}: shell={ast.unparse(shell)}")
        if name == "load" and owner == "torch":
            torch_loads += 1
            weights_only = _keyword(node, "weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                problems.append(f"{where}: torch.load without weights_only=True")
    return problems, torch_loads


def test_package_source_has_no_unsafe_calls():
    sources = sorted((REPO / "toolkit").rglob("*.py"))
    assert len(sources) > 20
    problems: list[str] = []
    torch_loads = 0
    for path in sources:
        found, loads = unsafe_calls(path.read_text(), str(path.relative_to(REPO)))
        problems += found
        torch_loads += loads
    assert problems == []
    assert torch_loads >= 1  # the scan does see the loads


def test_the_static_scan_catches_what_it_looks_for():
    """The scan above is not vacuous: the same function flags each forbidden call in a sample."""
    sample = (
        "import os, yaml, torch, subprocess, pickle\n"
        "model.eval()\neval('1')\nos.system('x')\nyaml.load(s)\nyaml.load(s, Loader=yaml.SafeLoader)\n"
        "subprocess.run('x', shell=True)\ntorch.load(p)\ntorch.load(p, weights_only=True)\n"
        "pickle.loads(b)\nexec('x')\nyaml.unsafe_load(s)\nsubprocess.run(['x'], shell=False)\n"
        "torch.load(p, weights_only=False)\n"
    )
    problems, loads = unsafe_calls(sample, "sample.py")
    assert problems == [
        "sample.py:3: eval()", "sample.py:4: os.system()", "sample.py:5: yaml.load(no Loader)",
        "sample.py:7: shell=True", "sample.py:8: torch.load without weights_only=True",
        "sample.py:10: pickle.loads()", "sample.py:11: exec()", "sample.py:12: yaml.unsafe_load(no Loader)",
        "sample.py:14: torch.load without weights_only=True",
    ]
    assert loads == 3


# --- untrusted configs and checkpoints ------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    "seed_everything: !!python/object/apply:os.mkdir [{marker!r}]\n",
    "model:\n  preset: tiny\n  architecture: !!python/object/apply:os.mkdir [{marker!r}]\n",
    "trainer: !!python/object/new:pathlib.Path [{marker!r}]\n",
], ids=["object/apply at top level", "object/apply nested", "object/new"])
def test_yaml_with_python_tags_is_refused_and_does_not_run(payload, tmp_path, shards, capsys):
    marker = tmp_path / "code-ran"
    config = tmp_path / "evil.yaml"
    config.write_text(payload.format(marker=str(marker)))
    code = main(["pretrain", "--config", str(config), "--data.train_shards", str(shards),
                 "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "1"])
    line = error_line(capsys.readouterr().err)
    assert code == 2 and "python/object" in line, line
    assert not marker.exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.fixture()
def malicious_pickle(tmp_path) -> tuple[Path, Path]:
    """A torch file whose unpickling would create ``marker`` (written by a child process)."""
    marker, path = tmp_path / "pickle-code-ran", tmp_path / "evil.ckpt"
    code = (
        "import os, sys, torch\n"
        "class E:\n    def __reduce__(self): return (os.mkdir, (sys.argv[1],))\n"
        "torch.save({'state_dict': {}, 'toolkit': {}, 'model': {}, 'args': E()}, sys.argv[2])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(marker), str(path)], check=True, timeout=120)
    return path, marker


def test_malicious_resume_checkpoint_is_refused(malicious_pickle, tmp_path, shards, capsys):
    path, marker = malicious_pickle
    code = main(["pretrain", "--config", str(TINY), "--data.train_shards", str(shards), "--trainer.default_root_dir",
                 str(tmp_path / "run"), "--trainer.max_steps", "1", "--resume", str(path)])
    line = error_line(capsys.readouterr().err)
    assert code == 2 and str(path) in line and "refused" in line, line
    assert not marker.exists()


@pytest.mark.parametrize("force_unsafe", [False, True], ids=["default", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1"])
def test_malicious_wav2vec2_checkpoint_is_refused(malicious_pickle, tmp_path, capsys, monkeypatch, force_unsafe):
    """`--wav2vec2` hands fairseq checkpoints to fairseq, whose own torch.load has no allow-list: the
    file must be vetted first, even when the environment switches torch's safe default off."""
    path, marker = malicious_pickle
    if force_unsafe:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    dataset = make_clips(tmp_path / "clips", 2)
    code = main(["evaluate", "--wav2vec2", str(path), "--dataset", f"csv:{dataset}", "--output", str(tmp_path / "e"),
                 "--no-progress", "--wandb-mode", "disabled", "--device", "cpu"])
    line = error_line(capsys.readouterr().err)
    assert code == 2 and str(path) in line and "refused" in line, line
    assert not marker.exists()
    assert os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD") == ("1" if force_unsafe else None)
