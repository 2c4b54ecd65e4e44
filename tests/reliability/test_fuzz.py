"""Property-based fuzzing: nothing escapes but the project's own error type.

* project.toml replaced by random bytes, random TOML text and random TOML
  documents shaped like a project -> ``Project.open`` succeeds or raises
  ``ProjectError``;
* recipe import with random text, mutated real recipes and random eval()
  formulas -> an Optimization or ``RecipeError`` (never a hang: each example
  has a deadline);
* ``--input-shape`` parsing -> a dict of positive ints or ``InputShapeError``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsify_tui.errors import InputShapeError, ProjectError, RecipeError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


# ---------------------------------------------------------------- project loading
@pytest.fixture(scope="module")
def project_template(tmp_path_factory):
    from sparsify_tui.cli import main

    from .helpers import tiny_conv

    d = tmp_path_factory.mktemp("fuzzproj")
    model = tiny_conv(d / "tiny.onnx")
    assert main(["new", str(model), "--dir", str(d / "p")]) == 0
    assert main(["profile", "loss", str(d / "p")]) == 0
    assert main(["optimize", str(d / "p"), "--sparsity", "0.5"]) == 0
    return d / "p"


@pytest.fixture
def fuzz_project(tmp_path, project_template):
    dest = tmp_path / "p"
    shutil.copytree(project_template, dest)
    return dest


def _open_only_project_error(d: Path, content: bytes) -> None:
    from sparsify_tui.project import Project

    (d / "project.toml").write_bytes(content)
    for readonly in (True, False):
        try:
            p = Project.open(d, readonly=readonly)
        except ProjectError:
            continue
        try:
            for e in p.profiles:
                try:
                    p.load_profile(e)
                except Exception as exc:  # noqa: BLE001
                    from sparsify_tui.errors import ProfileError

                    assert isinstance(exc, ProfileError), repr(exc)
            p.is_stale(p.profiles[0]) if p.profiles else None
        finally:
            p.close()


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_as_project_toml(fuzz_project, data):
    _open_only_project_error(fuzz_project, data)


@FUZZ
@given(st.text(alphabet=st.sampled_from(list('[]="\'.,=\n #abc01xyz_-tf\\{}:')), max_size=200))
def test_random_toml_like_text(fuzz_project, text):
    _open_only_project_error(fuzz_project, text.encode())


scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
                    st.floats(allow_nan=True), st.text(max_size=8), st.datetimes())
values = st.recursive(scalars.filter(lambda v: v is not None),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=3),
                      max_leaves=6)


def _mutate(doc: dict, path: list[str], value) -> dict:
    node = doc
    for k in path[:-1]:
        nxt = node.get(k)
        if not isinstance(nxt, dict):
            nxt = node[k] = {}
        node = nxt
    node[path[-1]] = value
    return doc


KEYS = [["schema_version"], ["project", "name"], ["project", "created"], ["project", "description"],
        ["model", "file"], ["model", "sha256"], ["model", "size"], ["model", "input_shapes"],
        ["model", "input_shapes", "x"], ["model", "mtime_ns"], ["profiles"], ["optimizations"], ["project"],
        ["model"]]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(KEYS), values), min_size=1, max_size=3), st.booleans())
def test_project_toml_with_wrong_value_types(fuzz_project, edits, drop_profiles):
    import tomllib

    doc = tomllib.loads((fuzz_project / "project.toml").read_text())
    if drop_profiles:
        doc.pop("profiles", None)
    for path, value in edits:
        _mutate(doc, list(path), value)
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):
        return  # not representable as TOML (e.g. a None): cannot be on disk either
    _open_only_project_error(fuzz_project, text.encode())


def test_profile_entry_fields_fuzzed_cases(fuzz_project):
    """A few hand-picked nasty ones that random search may miss."""
    base = (fuzz_project / "project.toml").read_text()
    for bad in (base.replace('kind = "loss"', "kind = 7"), base.replace('file = "profiles/', 'file = "../../etc/'),
                base.replace('file = "profiles/', 'file = "/dev/'), base.replace("[[profiles]]", "[profiles]"),
                base + "\n[[optimizations]]\nname = 3\n", base.replace("schema_version = 1", "schema_version = -1")):
        _open_only_project_error(fuzz_project, bad.encode())


# ---------------------------------------------------------------- recipe import
@pytest.fixture(scope="module")
def recipe_and_graph(project_template, tmp_path_factory):
    from sparsify_tui.analysis import analyze
    from sparsify_tui.cli import main

    out = tmp_path_factory.mktemp("recipe") / "r.yaml"
    assert main(["export", str(project_template), "--recipe", str(out)]) == 0
    return out.read_text(), analyze(project_template / "model.onnx")


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang("import_recipe took more than 10 s: a recipe must not be able to hang the app")


def _import(text: str, graph) -> None:
    import signal

    from sparsify_tui.optim.recipe import import_recipe

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(10)
    try:
        import_recipe(text, graph, warnings=[])
    except RecipeError:
        pass
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@FUZZ
@given(st.text(max_size=300))
def test_recipe_random_text(recipe_and_graph, text):
    _import(text, recipe_and_graph[1])


@FUZZ
@given(st.data())
def test_recipe_mutated_real_recipe(recipe_and_graph, data):
    text, graph = recipe_and_graph
    lines = text.splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        op = data.draw(st.sampled_from(["drop", "dup", "value", "indent", "cut"]))
        if op == "drop":
            lines.pop(i)
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "indent":
            lines[i] = " " * data.draw(st.integers(0, 6)) + lines[i].lstrip()
        elif op == "cut":
            lines[i] = lines[i][: data.draw(st.integers(0, max(0, len(lines[i]))))]
        else:
            head = lines[i].split(":", 1)[0]
            val = data.draw(st.sampled_from(["-1", "1.5", "nan", "inf", "''", "[]", "{}", "~", "true", "1e999",
                                             "eval(1/0)", "eval(x)", "eval(9**9**9)", "!Foo {}", "&a [*a]",
                                             "eval(-8 ** 0.5)", "eval((-8) ** 0.5)", "eval(round(1e308, -400))"]))
            lines[i] = f"{head}: {val}"
        if not lines:
            break
    _import("\n".join(lines), graph)


exprs = st.recursive(
    st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=False).map(repr),
              st.sampled_from(["a", "b", "nope", "1e999", "inf"])),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "//", "**", "%"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(["abs", "float", "int", "min", "max", "round", "len", "__import__"]),
                  st.lists(inner, max_size=3)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
    ),
    max_leaves=8,
)


@FUZZ
@given(exprs)
def test_recipe_eval_formulas(recipe_and_graph, expr):
    text, graph = recipe_and_graph
    _import(f"a: 2\nb: eval(a * 3)\nx: eval({expr})\n" + text.replace("0.9", "eval(x)", 1), graph)


# ---------------------------------------------------------------- --input-shape
@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=4))
def test_input_shape_random_text(args):
    from sparsify_tui.analysis import parse_input_shapes

    try:
        shapes = parse_input_shapes(args)
    except InputShapeError:
        return
    for name, dims in shapes.items():
        assert name and all((isinstance(d, int) and 1 <= d < 2**31) or d == "N" for d in dims)
        assert sum(d == "N" for d in dims) <= 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.from_regex(r"[A-Za-z_][A-Za-z0-9_.:/]{0,12}", fullmatch=True),
                          st.lists(st.integers(-3, 2**63), min_size=0, max_size=5),
                          st.sampled_from([",", "x", ", "])), max_size=3))
def test_input_shape_structured(items):
    from sparsify_tui.analysis import parse_input_shapes

    args = [f"{n}={sep.join(map(str, dims))}" for n, dims, sep in items]
    try:
        shapes = parse_input_shapes(args)
    except InputShapeError:
        return
    for n, dims, _ in items:
        assert shapes[n.strip()] == dims  # accepted means parsed exactly


# ---------------------------------------------------------------- flag values and profile documents
@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=20), st.integers(), st.floats(), st.none()), st.sampled_from(["int", "float",
                                                                                               "levels", "cores"]))
def test_flag_parsers_raise_only_usage_error(value, which):
    from sparsify_tui import settings as common  # the validation every face shares
    from sparsify_tui.errors import UsageError

    try:
        if which == "int":
            n = common.parse_int("--batch-size", value, minimum=1)
            assert isinstance(n, int) and n >= 1
        elif which == "float":
            x = common.parse_float("--sparsity", value, minimum=0.0, maximum=1.0, max_exclusive=True)
            assert 0.0 <= x < 1.0
        elif which == "levels":
            lv = common.parse_levels("--levels", None if value is None else str(value), [0.5])
            assert lv[0] == 0.0 and all(0.0 <= x < 1.0 for x in lv) and lv == sorted(set(lv))
        else:
            c = common.parse_cores("--cores", value)
            assert c is None or 1 <= c <= common.usable_cores()
    except UsageError:
        pass


@pytest.fixture(scope="module")
def perf_doc(project_template):
    from sparsify_tui.analysis import analyze
    from sparsify_tui.profiles.perf import approx_perf_profile

    return approx_perf_profile(analyze(project_template / "model.onnx"), cores=1)


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                                     st.text(max_size=6)),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                       max_size=3),
                           max_leaves=5)


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:3]):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_compare_mutated_profiles_raises_only_sparsify_errors(perf_doc, data):
    import argparse
    import contextlib
    import copy
    import io
    import json
    import tempfile

    from sparsify_tui.commands import compare
    from sparsify_tui.errors import SparsifyError

    doc = copy.deepcopy(perf_doc)
    paths = [p for p in _paths(doc) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        node = doc
        try:
            for k in path[:-1]:
                node = node[k]
            if data.draw(st.booleans()):
                node[path[-1]] = data.draw(json_values)
            elif isinstance(node, dict):
                node.pop(path[-1], None)
        except (KeyError, IndexError, TypeError):
            continue
    with tempfile.TemporaryDirectory() as d:
        a = Path(d) / "a.json"
        b = Path(d) / "b.json"
        a.write_text(json.dumps(perf_doc))
        b.write_text(json.dumps(doc))  # NaN/Infinity allowed: such files exist in the wild
        for x, y in ((a, b), (b, a)):
            args = argparse.Namespace(profile_a=str(x), profile_b=str(y), json=data.draw(st.booleans()))
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    compare.run(args)
            except SparsifyError as exc:
                assert "\n" not in str(exc)
