"""Which commit a manifest records."""

from harness import manifest


def test_commit_of_this_checkout(monkeypatch):
    monkeypatch.setenv(manifest.GIT_ENV, "not-this")
    got = manifest.git_commit()
    assert len(got["commit"]) == 40 and "declared" not in got  # .git wins over the variable


def test_a_copy_without_git_records_the_declared_commit(tmp_path, monkeypatch):
    """The device tool sends the tree without .git: kvb-device.sh passes KVB_GIT along."""
    monkeypatch.setattr(manifest, "REPO", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.delenv(manifest.GIT_ENV, raising=False)
    assert manifest.git_commit() == {"commit": None, "dirty": None}
    monkeypatch.setenv(manifest.GIT_ENV, "7c7ab5b")
    assert manifest.git_commit() == {"commit": "7c7ab5b", "dirty": None, "declared": True}
