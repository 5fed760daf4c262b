"""run_all_mini_glue.sh refuses, before any work, a WORK_DIR whose data was made with another
latent lexicon (qbert.data.lexicon): corpus, dictionary and dev splits must agree."""
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
