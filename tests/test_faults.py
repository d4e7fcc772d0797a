"""Fault injection: what a hostile but fair user does to a training run, and what must hold.

Each test is one row of the README's "What happens when..." table: the run refuses clearly or
ends safely, and nothing the user had is lost.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_gpt_train import load_example, tiny_config

import gpt.train as train_module
from gpt.checkpoint import CheckpointError, load_checkpoint
from gpt.run_dir import LOCK_NAME, RunDirError, claim_out_dir
from gpt.sample import load_for_sampling
from gpt.train import TrainingDiverged, config_for_resume, train

ROOT = Path(__file__).resolve().parent.parent


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


# ------------------------------------------------------------- the out-dir

def test_a_second_run_into_the_same_out_dir_is_refused_and_overwrite_moves_it_aside(small_text, tmp_path):
    config = tiny_config(tmp_path, small_text, max_iters=3)
    train(config)
    before = snapshot(Path(config.out_dir))
    with pytest.raises(RunDirError, match="already holds a training run.*--resume.*--overwrite"):
        train(config)
    assert snapshot(Path(config.out_dir)) == before  # nothing touched

    train(tiny_config(tmp_path, small_text, max_iters=2, overwrite=True))
    out = Path(config.out_dir)
    previous = [p for p in out.iterdir() if p.name.startswith("previous-")]
    assert len(previous) == 1 and snapshot(previous[0]) == before  # the old run, whole
    assert load_checkpoint(out).train_state["iteration"] == 2


def test_the_script_refuses_a_second_run_with_exit_code_1(small_text, tmp_path, capsys):
    script = load_example("train_shakespeare")
    flags = ["--data", str(small_text), "--out-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"),
             "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8", "--max-iters", "2",
             "--eval-iters", "1", "--final-eval-iters", "1", "--sample-tokens", "4", "--no-progress"]
    assert script.main(flags) == 0
    capsys.readouterr()
    assert script.main(flags) == 1
    assert "--resume" in capsys.readouterr().err


def test_a_concurrent_run_is_refused_and_a_stale_lock_is_taken_over(small_text, tmp_path):
    config = tiny_config(tmp_path, small_text, max_iters=2)
    out = Path(config.out_dir)
    with claim_out_dir(out, resume=False, overwrite=False):  # this process is "the other run"
        with pytest.raises(RunDirError, match=f"another run is training into .*pid {os.getpid()}"):
            train(config)
    assert not out.exists()  # the lock went with its owner, and nothing else was left

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": "then"}))
    train(config)  # the stale lock is taken over
    assert not (out / LOCK_NAME).exists() and load_checkpoint(out).train_state["iteration"] == 2


# Dies (like SIGKILL: no cleanup handlers run) at the Nth file rename or fsync of a run that saves
# a checkpoint at every iteration.
DIE_DURING_SAVES = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    from gpt.train import TrainConfig, train
    calls, die_at = [0], int(sys.argv[1])
    def dying(original):
        def call(*args, **kwargs):
            calls[0] += 1
            if calls[0] == die_at:
                os._exit(137)
            return original(*args, **kwargs)
        return call
    os.replace, os.fsync = dying(os.replace), dying(os.fsync)
    train(TrainConfig(data={data!r}, cache_dir={cache!r}, out_dir={out!r}, n_layer=1, n_head=2, n_embd=16,
                      block_size=8, batch_size=2, max_iters=4, eval_interval=1, eval_iters=1,
                      final_eval_iters=1, sample_tokens=2, progress=False))
""")


@pytest.mark.timeout(90)
def test_a_save_killed_at_any_point_leaves_a_loadable_checkpoint_and_no_debris(small_text, tmp_path):
    train(tiny_config(tmp_path, small_text, max_iters=1))  # fills the token cache: no renames for it later
    # Each save makes 5 of those calls: rename the weights into place, fsync them, fsync the JSON,
    # rename it into place, fsync the folder. The saves of iteration 0 (best, last) are calls 1-10;
    # 11-15 are the next save of last, 26-30 the final save of best.
    for die_at in (11, 12, 13, 14, 15, 26, 29):
        out = tmp_path / f"out-{die_at}"
        script = DIE_DURING_SAVES.format(root=str(ROOT), data=str(small_text), cache=str(tmp_path / "cache"),
                                         out=str(out))
        run = subprocess.run([sys.executable, "-c", script, str(die_at)], capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 137, run.stderr[-2000:]
        with claim_out_dir(out, resume=True, overwrite=False):  # what every start does first
            names = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME and not p.is_dir())
            load_checkpoint(out, "last")  # whole and consistent
        weights = [n for n in names if n.endswith(".safetensors")]
        assert not [n for n in names if n.endswith(".tmp")], (die_at, names)
        assert len(weights) == sum(n in names for n in ("last.json", "best.json")), (die_at, names)


@pytest.mark.timeout(90)
def test_a_sigkill_while_safetensors_writes_leaves_nothing_after_the_next_start(small_text, tmp_path):
    # A model of ~38 MB of weights and moments, saving at every iteration: poll for the temporary
    # file safetensors writes through, and kill -9 the process while it is there.
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from gpt.train import TrainConfig, train
        train(TrainConfig(data={str(small_text)!r}, cache_dir={str(tmp_path / "c")!r}, out_dir={str(out)!r},
                          n_layer=4, n_head=4, n_embd=256, block_size=8, batch_size=2, max_iters=200,
                          eval_interval=1, eval_iters=1, final_eval_iters=1, sample_tokens=1, progress=False))
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if out.is_dir() and (out / "last.json").exists() and any(out.glob(".tmp*")):
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.0005)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL, "never caught a save in progress: " + process.stderr.read().decode()[-500:]
    with claim_out_dir(out, resume=True, overwrite=False):
        names = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)
        load_checkpoint(out, "last")
    assert not [n for n in names if n.startswith(".tmp") or n.endswith(".tmp")], names
    assert len([n for n in names if n.endswith(".safetensors")]) == 2, names  # last's and best's


# ------------------------------------------------------- divergence and flags

def test_non_finite_gradients_stop_training_and_keep_the_last_checkpoint(small_text, tmp_path, monkeypatch):
    calls = [0]
    real_clip = train_module.clip_grad_norm_

    def clip_then_nan(params, max_norm):
        calls[0] += 1
        norm = real_clip(params, max_norm)
        return float("nan") if calls[0] >= 4 else norm  # from the 4th step on, the gradients are NaN

    monkeypatch.setattr(train_module, "clip_grad_norm_", clip_then_nan)
    config = tiny_config(tmp_path, small_text, eval_interval=2)
    with pytest.raises(TrainingDiverged, match=r"iteration 3 .*gradient norm nan.*untouched \(last saved at "
                                               r"iteration 2\)"):
        train(config)
    saved = load_checkpoint(config.out_dir)
    assert saved.train_state["iteration"] == 2
    assert all(value == value for value in saved.model_state["wte.weight"].ravel())  # no NaN was saved

    calls[0] = 0
    skipping = tiny_config(tmp_path / "b", small_text, max_iters=5, skip_nonfinite=2)
    result = train(skipping)  # steps 3 and 4 are skipped, and the run finishes
    assert result.iterations == 5 and result.final_val_loss == result.final_val_loss


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's overflow warnings on the way to NaN
def test_a_real_divergence_exits_1_and_keeps_the_checkpoint(small_text, tmp_path, capsys):
    script = load_example("train_shakespeare")
    out = tmp_path / "out"
    flags = ["--data", str(small_text), "--out-dir", str(out), "--cache-dir", str(tmp_path / "c"), "--n-layer", "1",
             "--n-head", "2", "--n-embd", "16", "--block-size", "8", "--max-iters", "60", "--eval-interval", "1000",
             "--eval-iters", "1", "--final-eval-iters", "1", "--sample-tokens", "4", "--no-progress",
             "--lr", "1e6", "--warmup-iters", "0", "--grad-clip", "0"]
    assert script.main(flags) == 1
    assert "training diverged at iteration" in capsys.readouterr().err
    assert load_checkpoint(out).train_state["iteration"] == 0  # the checkpoint of iteration 0, intact


@pytest.mark.parametrize("flags", [["--lr", "nan"], ["--lr", "inf"], ["--lr", "-1"], ["--batch-size", "0"],
                                   ["--dropout", "1"], ["--beta2", "1.5"], ["--max", "10"], ["--max-iters", "x"],
                                   ["--allow-data-change"], ["--resume", "--overwrite"]])
def test_impossible_flags_are_refused_at_parse_time_with_exit_code_2(flags, tmp_path, capsys):
    script = load_example("train_shakespeare")
    with pytest.raises(SystemExit) as stopped:
        script.main(flags + ["--out-dir", str(tmp_path / "out")])
    assert stopped.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------- the data

def test_resuming_on_changed_data_is_refused_unless_allowed(small_text, tmp_path):
    config = tiny_config(tmp_path, small_text, max_iters=2)
    train(config)
    text = small_text.read_text(encoding="utf-8")
    small_text.write_text(text[::-1], encoding="utf-8")  # the same characters, another text
    with pytest.raises(CheckpointError, match=r"the data file changed \(sha256 [0-9a-f]{16}\.\.\. vs "):
        train(config_for_resume(config.out_dir, {"max_iters": 4}))
    assert load_checkpoint(config.out_dir).train_state["iteration"] == 2

    result = train(config_for_resume(config.out_dir, {"max_iters": 4, "allow_data_change": True}))
    saved = load_checkpoint(config.out_dir).train_state
    assert result.iterations == 4 and saved["data_file"]["sha256"] != ""
    assert saved["best_val_loss"] == result.best_val_loss  # measured on the new text only


def test_different_characters_are_named(small_text, tmp_path):
    config = tiny_config(tmp_path, small_text, max_iters=2)
    train(config)
    text = small_text.read_text(encoding="utf-8")
    small_text.write_text(text.replace("?", "#"), encoding="utf-8")  # as many characters, one different
    with pytest.raises(CheckpointError, match=r"only in the checkpoint's text: '\?'; only in this --data: '#'"):
        train(config_for_resume(config.out_dir, {}))


def test_a_tampered_checkpoint_json_is_refused(small_text, tmp_path, capsys):
    config = tiny_config(tmp_path, small_text, max_iters=2)
    train(config)
    path = Path(config.out_dir) / "last.json"
    document = json.loads(path.read_text())
    document["tokenizer"]["chars"] = document["tokenizer"]["chars"][::-1]
    path.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="changed after it was saved"):
        load_for_sampling(config.out_dir)
    assert load_example("sample").main(["--out-dir", config.out_dir]) == 1
    assert "changed after it was saved" in capsys.readouterr().err


# -------------------------------------------------------------- the paths

@pytest.mark.parametrize("which", ["out_dir", "cache_dir"])
def test_unusable_folders_are_reported_before_any_work(small_text, tmp_path, which):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for bad in (a_file, a_file / "below"):
        config = tiny_config(tmp_path, small_text, **{which: str(bad)})
        with pytest.raises(RunDirError, match=f"--{which.replace('_', '-')} .*(is a file|cannot be created)"):
            train(config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "small.txt"]  # no folder left behind


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("flag", ["--out-dir", "--cache-dir"])
def test_a_folder_that_cannot_be_created_is_reported(small_text, tmp_path, flag, capsys):
    script = load_example("train_shakespeare")
    folders = {"--out-dir": str(tmp_path / "out"), "--cache-dir": str(tmp_path / "cache"), flag: "/proc/x"}
    assert script.main(["--data", str(small_text), "--max-iters", "1", *[a for f in folders.items() for a in f]]) == 1
    assert f"error: {flag} /proc/x cannot be created" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_parent_is_reported(small_text, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(RunDirError, match="no write permission"):
        train(tiny_config(tmp_path, small_text, out_dir=str(locked / "out")))


def test_python_m_gpt_says_where_to_look():
    run = subprocess.run([sys.executable, "-m", "gpt"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 2 and "examples/train_shakespeare.py" in run.stderr


def test_a_checkpoint_with_nan_weights_is_refused_for_sampling(tmp_path, capsys):
    import numpy as np

    from gpt import GPT, GPTConfig
    from gpt.checkpoint import save_checkpoint
    from gpt.data import CharTokenizer

    model = GPT(GPTConfig(vocab_size=3, block_size=4, n_layer=1, n_head=1, n_embd=4))
    model.wte.weight.data[0, 0] = np.nan  # as a diverged run would have saved before this check existed
    save_checkpoint(tmp_path, "last", model=model, model_config=model.config.to_dict(),
                    tokenizer=CharTokenizer("abc").to_dict(), train_state={"iteration": 1})
    assert load_example("sample").main(["--out-dir", str(tmp_path)]) == 1
    assert "NaN or infinite weights (lm_head.weight, wte.weight)" in capsys.readouterr().err  # tied


def test_config_errors_are_worded_as_flags():
    script = load_example("train_shakespeare")
    assert script.as_flags("TrainConfig: min_lr must be finite, got nan; gradient_accumulation_steps too") == \
        "--min-lr must be finite, got nan; --grad-accum too"
