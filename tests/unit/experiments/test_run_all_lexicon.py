"""run_all_mini_glue.sh refuses, before any work, a WORK_DIR whose data was made with another
latent lexicon (qbert.data.lexicon) or COMPOSITE setting: corpus, dictionary and dev splits must
agree; prepare_mini_glue.sh writes the composite tasks with COMPOSITE=1."""
import os
import subprocess

from conftest import REPO_DIR

SCRIPT = os.path.join(REPO_DIR, "scripts", "run_all_mini_glue.sh")


def _run(work, **env):
    full = dict(os.environ, TASKS="", KD_EFFECT_TASKS="", FAMILIES="kd_effect", **env)
    return subprocess.run(["bash", SCRIPT, str(work)], capture_output=True, text=True, env=full, timeout=60)


def test_mismatched_lexicon_is_refused_in_one_line(tmp_path):
    (tmp_path / "lexicon").write_text("aliases=4 alias_prob=0.5 glosses=40\n")
    proc = _run(tmp_path, ALIASES="1")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "ALIASES" in proc.stderr and "aliases=4" in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["lexicon"]  # nothing made


def test_old_data_without_lexicon_is_refused_for_aliases(tmp_path):
    (tmp_path / "data").mkdir()
    proc = _run(tmp_path, ALIASES="4")
    assert proc.returncode == 2 and "ALIASES=4" in proc.stderr
    assert not (tmp_path / "lexicon").exists()


def test_composite_must_match_the_record_and_be_0_or_1(tmp_path):
    (tmp_path / "lexicon").write_text("aliases=0 alias_prob=0.5 glosses=40 in_train=0\n")
    proc = _run(tmp_path, COMPOSITE="1")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "COMPOSITE" in proc.stderr and "composite=1" in proc.stderr
    proc = _run(tmp_path, COMPOSITE="yes")
    assert proc.returncode == 2 and proc.stderr == "error: COMPOSITE=yes; expected 0 or 1\n"
    assert sorted(os.listdir(tmp_path)) == ["lexicon"]  # nothing made


def test_prepare_writes_composite_tasks(tmp_path):
    env = dict(os.environ, COMPOSITE="1", TRAIN_SIZE="30", DEV_SIZE="10", TEST_SIZE="5")
    proc = subprocess.run(["bash", os.path.join(REPO_DIR, "scripts", "prepare_mini_glue.sh"), str(tmp_path),
                           "SST-2"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = (tmp_path / "glue" / "SST-2" / "dev.tsv").read_text().splitlines()[1:]
    assert all(" ; " in r for r in rows)   # several clauses per review
    assert (tmp_path / "SST-2-bin" / "input0" / "valid.bin").is_file()
    bad = subprocess.run(["bash", os.path.join(REPO_DIR, "scripts", "prepare_mini_glue.sh"), str(tmp_path / "x"),
                          "SST-2"], capture_output=True, text=True, env=dict(env, COMPOSITE="2"), timeout=60)
    assert bad.returncode == 2 and bad.stderr == "error: COMPOSITE=2; expected 0 or 1\n"
    assert not (tmp_path / "x").exists()
