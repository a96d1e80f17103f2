"""Names and paths typed by users: refused before they touch the file system, accepted when harmless."""

from __future__ import annotations

import os
import sys

import pytest

from lib_lorakit.errors import InvalidName, LorakitError, PathNotAllowed
from lib_lorakit.paths import check_name, is_inside, resolve_inside, safe_file_stem


@pytest.mark.parametrize("name,words", [
    ("", "empty"), ("   ", "empty"), ("..", "dot"), (".", "dot"), (".hidden", "dot"),
    ("a/b", "'/'"), ("a\\b", "'\\\\'"), ("c:d", "':'"), ("what?", "'?'"),
    ("NUL", "reserved"), ("con.txt", "reserved"), ("Com1", "reserved"), ("lpt9.tar.gz", "reserved"),
    ("a\x00b", "'\\x00'"), ("tab\there", "'\\t'"), ("bell\x07", "'\\x07'"), ("line\nbreak", "'\\n'"),
    ("zero\u200bwidth", "'\\u200b'"), ("trailing.", "ends with a dot"), ("trailing ", "space"),
    (" leading", "space"), ("x" * 101, "101 characters"),
])
def test_check_name_refuses(name, words):
    with pytest.raises(InvalidName) as e:
        check_name(name, what="concept name")
    assert words in str(e.value)
    assert isinstance(e.value, LorakitError)


def test_check_name_says_what_was_named():
    with pytest.raises(InvalidName, match="project name"):
        check_name("a/b", what="project name")


@pytest.mark.parametrize("name", ["sks woman", "キャラ", "Émilie 2", "a" * 100, "v1.5 style", "x_y-z (old)",
                                  "nullable", "console", "auxiliary"])
def test_check_name_accepts(name):
    assert check_name(name) == name


def test_check_name_refuses_non_strings():
    with pytest.raises(InvalidName):
        check_name(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("stem,expected", [("holiday photo", "holiday photo"), ("キャラ", "キャラ"),
                                           ('say "cheese"', "say _cheese"), ("a/../b", "a_b"),
                                           ("new\nline", "new_line"), ("...", "image"), ("CON", "image")])
def test_safe_file_stem(stem, expected):
    assert safe_file_stem(stem) == expected


def test_safe_file_stem_is_bounded():
    assert len(safe_file_stem("x" * 500)) <= 80


# --- resolve_inside ---------------------------------------------------------------------------------------------

@pytest.fixture
def roots(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(b"x")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.png").write_bytes(b"y")
    return root


def test_accepts_paths_inside(roots):
    assert resolve_inside(roots / "sub" / "a.png", [roots]) == (roots / "sub" / "a.png").resolve()
    assert resolve_inside(str(roots), [roots]) == roots.resolve()
    assert resolve_inside(roots / "sub" / ".." / "sub" / "a.png", [roots]) == (roots / "sub" / "a.png").resolve()
    assert resolve_inside(roots / "not yet made.png", [roots]) == roots.resolve() / "not yet made.png"


def test_accepts_symlink_inside(roots):
    os.symlink(roots / "sub" / "a.png", roots / "alias.png")
    assert resolve_inside(roots / "alias.png", [roots]) == (roots / "sub" / "a.png").resolve()


@pytest.mark.parametrize("rel", ["../outside/secret.png", "sub/../../outside", "sub/../../root-sibling"])
def test_refuses_dot_dot_escapes(roots, rel):
    with pytest.raises(PathNotAllowed) as e:
        resolve_inside(str(roots) + "/" + rel, [roots])
    assert str(roots.resolve()) in str(e.value), "the message names the allowed folders"


def test_refuses_absolute_paths_outside(roots, tmp_path):
    for path in ("/etc/passwd", tmp_path / "outside" / "secret.png", tmp_path):
        with pytest.raises(PathNotAllowed):
            resolve_inside(path, [roots])


def test_refuses_a_root_lookalike(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "data-evil").mkdir()
    with pytest.raises(PathNotAllowed):
        resolve_inside(tmp_path / "data-evil", [root])


def test_refuses_symlinks_pointing_outside(roots, tmp_path):
    os.symlink(tmp_path / "outside" / "secret.png", roots / "sub" / "link.png")
    os.symlink(tmp_path / "outside", roots / "dirlink")
    for path in (roots / "sub" / "link.png", roots / "dirlink", roots / "dirlink" / "secret.png"):
        with pytest.raises(PathNotAllowed):
            resolve_inside(path, [roots])


def test_refuses_nul_and_empty(roots):
    with pytest.raises(PathNotAllowed, match="NUL"):
        resolve_inside(str(roots) + "/a\x00.png", [roots])
    with pytest.raises(PathNotAllowed, match="empty"):
        resolve_inside("  ", [roots])


def test_no_roots_means_nothing_is_allowed(roots):
    with pytest.raises(PathNotAllowed, match="none configured"):
        resolve_inside(roots / "sub" / "a.png", [])


def test_any_of_several_roots(roots, tmp_path):
    secret = tmp_path / "outside" / "secret.png"
    assert resolve_inside(secret, [roots, tmp_path / "outside"]) == secret.resolve()


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="Python 3.13 resolves symlink loops without an error")
def test_symlink_loop_is_refused_with_our_error(roots):
    os.symlink("loop", roots / "loop")
    with pytest.raises(PathNotAllowed, match="symbolic link loop"):
        resolve_inside(roots / "loop", [roots])


def test_is_inside(roots, tmp_path):
    assert is_inside(roots / "sub" / "a.png", roots)
    assert is_inside(roots, roots)
    assert not is_inside(tmp_path / "outside", roots)
