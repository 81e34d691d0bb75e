from pathlib import Path

from embedrec.cache import cache_root
from embedrec.datasets.movielens import default_cache_dir


def test_the_cache_is_embedrecs_own_variable_else_the_xdg_one_else_the_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_root() == tmp_path / "home" / ".cache" / "embedrec"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "embedrec"
    monkeypatch.setenv("EMBEDREC_CACHE", str(tmp_path / "mine"))
    assert cache_root() == default_cache_dir() == Path(tmp_path / "mine")
