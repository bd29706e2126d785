"""Where data goes (issue 22, item 8): a checkout keeps its git-ignored data/; an installed copy
uses the user's cache folder, never site-packages; $FLOWPROF_DATA overrides both."""

from __future__ import annotations

from pathlib import Path

from flowprof.training.mnist import data_root_beside, default_data_root

ROOT = Path(__file__).resolve().parents[1]


def test_a_checkout_keeps_data_in_the_repository(monkeypatch) -> None:
    monkeypatch.delenv("FLOWPROF_DATA", raising=False)
    assert default_data_root() == ROOT / "data"


def test_an_installed_package_uses_the_cache_folder(tmp_path, monkeypatch) -> None:
    site = tmp_path / "site-packages"  # flowprof/ installed here, no pyproject.toml beside it
    (site / "flowprof").mkdir(parents=True)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root_beside(site) == tmp_path / "home" / ".cache" / "flowprof"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_root_beside(site) == tmp_path / "xdg" / "flowprof"
    (site / "pyproject.toml").write_text("")  # now it looks like a checkout
    assert data_root_beside(site) == site / "data"


def test_flowprof_data_overrides(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FLOWPROF_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
