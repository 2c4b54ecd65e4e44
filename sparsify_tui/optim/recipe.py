"""SparseML recipes: export an optimization as recipe YAML, import a recipe back.

API (stable)::

    text = export_recipe(opt, graph, name_map=None, warnings=None)   # YAML text
    opt = import_recipe(text, graph, name_map=None, warnings=None)   # -> Optimization
    name_map, warns = load_name_map(path, graph=None)               # {onnx_name: framework_name}
    doc = load_recipe_yaml(text)   # dict; every `!Tag` node becomes a mapping with "__tag__"

Format (SparseML's recipe YAML): ``version: 1.1.0`` then
``modifiers:`` with ``    - !Name`` entries, keys alphabetical, props indented 8
spaces, a blank line after each modifier, modifiers sorted by end epoch (-1
last) then start epoch, as SparseML's ``ScheduledModifierManager`` writes
them; values are valid YAML (floats always with a dot, names quoted):

* ``!EpochRangeModifier`` {start_epoch, end_epoch}
* one ``!GMPruningModifier`` per sparsity value of the plan (the allocation
  groups layers into at most ``pruning.buckets`` values): params = the
  layers' ONNX weight (initializer) names, or their framework names through a
  name map; final_sparsity strictly in (0, 1); init_sparsity (at most the
  final); inter_func, mask_type, leave_enabled, update_frequency, epochs.
* ``!SetLearningRateModifier`` {learning_rate, start_epoch}; ``!LearningRateModifier``
  {lr_class StepLR|MultiStepLR|ExponentialLR|CosineAnnealingWarmRestarts,
  lr_kwargs, init_lr, start_epoch, end_epoch} (milestones strictly inside the
  range, init_lr in (0, 1], no ``eval()``).
* ``!QuantizationModifier`` {start_epoch[, ignore: module names of the layers
  not quantized]}.

A header comment says the names are ONNX weight names (they may not match the
framework's parameter names unless ``--name-map`` was given: the original
Sparsify's most reported problem). A second comment line
``# sparsify-tui: {...}`` carries what a recipe cannot express (name, notes,
target, balance, filters, overrides, exclusions, per-layer reasons) and a
digest of the modifiers: importing an unedited export gives back the same
optimization; if the modifiers were edited, they win.

Import accepts YAML or the ``.md`` front-matter form, modifiers under any
top-level key containing ``modifiers``, variables (numbers or
``eval(expr)`` with + - * / // ** % and abs/float/int/min/max/round), tags with
or without a framework prefix (``!pytorch.GMPruningModifier``), params given
as names, ``re:`` regexes, ``__ALL__`` or ``__ALL_PRUNABLE__``. Staged recipes
raise ``RecipeError("staged recipes are not supported")``.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import json
import math
import operator
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sparsify_tui import __version__
from sparsify_tui.errors import RecipeError, UsageError
from sparsify_tui.fsutil import read_user_text
from sparsify_tui.optim.optimization import (
    INTERPOLATIONS,
    MASK_TYPES,
    REASON_USER,
    LRModifier,
    Optimization,
    PruningSettings,
    QuantizationSettings,
    now_iso,
)
from sparsify_tui.optim.plan import LayerPlan, Precision

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import Layer, ModelGraph

RECIPE_VERSION = "1.1.0"
META_PREFIX = "# sparsify-tui: "
NAME_WARNING = (
    "# The params lists hold ONNX weight (initializer) names. They may not match your\n"
    "# framework's parameter names (e.g. PyTorch 'layer1.0.conv1.weight') unless this recipe\n"
    "# was exported with --name-map ONNX_TO_FRAMEWORK.json|.csv: check them before training.\n"
)
NAME_WARNING_MAPPED = (
    "# The params lists hold framework parameter names from the name map given at export;\n"
    "# layers without an entry in the map keep their ONNX weight names.\n"
)
LR_CLASSES = {"step": "StepLR", "multi_step": "MultiStepLR", "exponential": "ExponentialLR",
              "cosine": "CosineAnnealingWarmRestarts"}
LR_KINDS_BY_CLASS = {v: k for k, v in LR_CLASSES.items()}


# ---------------------------------------------------------------- YAML scalars
def _yfloat(x: float) -> str:
    """A float YAML 1.1 (PyYAML) reads back as the same float: always with a dot."""
    x = float(x)
    if not math.isfinite(x):
        raise RecipeError(f"cannot write the non-finite value {x!r} in a recipe")
    r = repr(x)
    if "e" in r or "E" in r:
        mant, exp = r.lower().split("e")
        if "." not in mant:
            mant += ".0"
        if exp[0] not in "+-":
            exp = "+" + exp
        return f"{mant}e{exp}"
    if "." not in r:
        r += ".0"
    return r


def _yname(s: str) -> str:
    if all(32 <= ord(ch) < 127 for ch in s):
        return "'" + s.replace("'", "''") + "'"
    return json.dumps(s)  # double-quoted with escapes: valid YAML


def _yvalue(v: Any) -> str:
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _yfloat(v)
    if isinstance(v, str):
        return v if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v) and v.lower() not in (
            "true", "false", "yes", "no", "on", "off", "null", "none") else _yname(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_yvalue(x) if not isinstance(x, str) else _yname(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_yname(str(k))}: {_yvalue(x)}" for k, x in sorted(v.items())) + "}"
    raise RecipeError(f"cannot write a {type(v).__name__} value in a recipe")


def _modifier_text(tag: str, props: dict[str, Any]) -> str:
    lines = [f"    - !{tag}"]
    for k in sorted(props):
        lines.append(f"        {k}: {_yvalue(props[k])}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- export
def module_name(weight_name: str) -> str:
    """'layer1.0.conv1.weight' -> 'layer1.0.conv1' (the module SparseML's quantization ignores)."""
    return weight_name[: -len(".weight")] if weight_name.endswith(".weight") else weight_name


def _weight_names(graph: "ModelGraph") -> dict[str, str]:
    return {lay.id: (lay.weight_name or lay.id) for lay in graph.layers if lay.prunable}


def _modifiers(opt: Optimization, graph: "ModelGraph", name_map: dict[str, str] | None,
               warnings: list[str] | None) -> list[tuple[str, dict[str, Any]]]:
    names = _weight_names(graph)
    nm = name_map or {}
    mods: list[tuple[str, dict[str, Any]]] = []
    mods.append(("EpochRangeModifier", {"start_epoch": float(opt.start_epoch), "end_epoch": float(opt.end_epoch)}))
    p = opt.pruning
    if p.enabled:
        buckets: dict[float, list[str]] = {}
        depth = {lay.id: lay.depth for lay in graph.layers}
        for lid, sp in sorted(opt.plan.unstructured().items(), key=lambda kv: depth.get(kv[0], 0)):
            if lid not in names:
                continue
            if sp >= 1.0:
                raise RecipeError(f"layer {lid!r} has sparsity {sp:g}: a recipe needs sparsities below 1")
            buckets.setdefault(sp, []).append(lid)
        unmapped = 0
        for s in sorted(buckets):
            params = []
            for lid in buckets[s]:
                w = names[lid]
                if nm and w not in nm:
                    unmapped += 1
                params.append(nm.get(w, w))
            mods.append(("GMPruningModifier", {
                "start_epoch": float(p.start_epoch), "end_epoch": float(p.end_epoch),
                "update_frequency": float(p.update_frequency),
                "init_sparsity": float(min(p.init_sparsity, s)), "final_sparsity": float(s),
                "inter_func": p.interpolation, "mask_type": p.mask_type, "leave_enabled": bool(p.leave_enabled),
                "params": params,
            }))
        if unmapped and warnings is not None:
            warnings.append(f"{unmapped} pruned layer(s) have no entry in the name map and keep their ONNX weight names")
    for m in opt.lr_modifiers:
        if m.kind == "set":
            mods.append(("SetLearningRateModifier", {"learning_rate": float(m.init_lr), "start_epoch": float(m.start_epoch)}))
            continue
        a = m.args
        if m.kind == "step":
            kw = {"gamma": float(a["gamma"]), "step_size": float(a["step_size"])}
        elif m.kind == "multi_step":
            kw = {"gamma": float(a["gamma"]), "milestones": [float(x) for x in a["milestones"]]}
        elif m.kind == "exponential":
            kw = {"gamma": float(a["gamma"])}
        else:
            kw = {"lr_min": float(a.get("lr_min", 0.0)), "cycle_epochs": float(a["cycle_epochs"])}
        mods.append(("LearningRateModifier", {
            "lr_class": LR_CLASSES[m.kind], "lr_kwargs": kw, "init_lr": float(m.init_lr),
            "start_epoch": float(m.start_epoch), "end_epoch": float(m.end_epoch),
        }))
    q = opt.quantization
    if q.enabled:
        props: dict[str, Any] = {"start_epoch": float(q.start_epoch)}
        quantized = set(names) if q.layers == "all" else set(q.layers)
        quantized -= set(q.skipped)
        for lid, prec in opt.plan.precision_by_layer().items():  # a per-layer precision in the plan wins
            if lid in names:
                (quantized.add if prec is Precision.INT8 else quantized.discard)(lid)
        ignore = [module_name(nm.get(names[lid], names[lid])) for lid in names if lid not in quantized]
        if ignore:
            props["ignore"] = ignore
        mods.append(("QuantizationModifier", props))

    def key(item: tuple[str, dict[str, Any]]) -> tuple:
        props = item[1]
        end = props.get("end_epoch", -1.0)
        return (1 if end == -1 else 0, end, props.get("start_epoch", -1.0))

    return sorted(mods, key=key)


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]


NO_LOSS_HEADER = ("# Planned without a measured loss profile: layer sensitivities came from weight magnitudes.\n"
                  "# Measure one ('sparsify-tui profile loss --method one-shot') and validate the plan first.\n")


def export_recipe(opt: Optimization, graph: "ModelGraph", name_map: dict[str, str] | None = None,
                  warnings: list[str] | None = None, profiles: dict[str, str] | None = None,
                  loss_measured: bool | None = None) -> str:
    """The optimization as SparseML recipe YAML (its ``layers`` must hold the allocation).

    ``loss_measured`` (None: the optimization names no loss profile means not measured) adds a header
    line saying that the plan was made without a measured loss profile.
    """
    opt.validate()
    if opt.pruning.enabled and not opt.layers:
        raise RecipeError(f"optimization {opt.name!r} has no per-layer sparsities yet: run the allocation first")
    mods = _modifiers(opt, graph, name_map, warnings)
    body = f"version: {RECIPE_VERSION}\n\nmodifiers:\n" + "\n".join(_modifier_text(t, p) for t, p in mods)
    meta_opt = opt.to_dict()
    meta_opt["layers"] = opt.plan.annotations()  # the sparsities are in the modifiers
    meta = {"digest": _digest(body), "mapped": bool(name_map), "optimization": meta_opt}
    model = Path(getattr(graph, "path", "") or "model.onnx").name
    header = (f"# SparseML recipe written by sparsify-tui {__version__} for {model}, "
              f"optimization {opt.name!r}.\n"
              + ("# Estimates from " + ", ".join(f"{k} profile {v}" for k, v in profiles.items()) + ".\n"
                 if profiles else "")
              + (NAME_WARNING_MAPPED if name_map else NAME_WARNING)
              + (NO_LOSS_HEADER if opt.pruning.enabled and not (
                  bool(opt.loss_profile_id) if loss_measured is None else loss_measured) else "")
              + META_PREFIX + json.dumps(meta, separators=(",", ":"), sort_keys=True, ensure_ascii=True) + "\n")
    return header + body


# ---------------------------------------------------------------- YAML loading
class _TagLoader(yaml.SafeLoader):
    """A safe loader that accepts any ``!Tag``: the node becomes a mapping with ``__tag__``."""


def _any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        d = loader.construct_mapping(node, deep=True)
        value: dict[str, Any] = dict(d)
    elif isinstance(node, yaml.SequenceNode):
        value = {"__value__": loader.construct_sequence(node, deep=True)}
    else:
        v = loader.construct_scalar(node)
        value = {"__value__": v} if v not in ("", None) else {}
    value["__tag__"] = suffix
    return value


_TagLoader.add_multi_constructor("!", _any_tag)


def _front_matter(text: str) -> str:
    lines = text.splitlines()
    i = 0
    while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
        i += 1
    if i < len(lines) and lines[i].strip() == "---":
        for j in range(i + 1, len(lines)):
            if lines[j].strip() in ("---", "..."):
                return "\n".join(lines[i + 1: j])
    return text


def load_recipe_yaml(text: str, source: str = "recipe") -> dict[str, Any]:
    """Parse recipe text (YAML or .md front matter) into a dict; tags become ``__tag__`` keys."""
    try:
        doc = yaml.load(_front_matter(text), Loader=_TagLoader)  # noqa: S506 - safe loader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = str(getattr(exc, "problem", None) or exc).strip().splitlines()[0]
        raise RecipeError(f"{source} is not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise RecipeError(f"{source} is not a recipe: its YAML is nested too deeply") from None
    if isinstance(doc, list):
        doc = {"modifiers": doc}
    if not isinstance(doc, dict):
        raise RecipeError(f"{source} is not a recipe: expected a YAML mapping with a 'modifiers' list")
    return doc


# ---------------------------------------------------------------- restricted eval for variables
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow, ast.Mod: operator.mod}
_FUNCS = {"abs": abs, "float": float, "int": int, "min": min, "max": max, "round": round}
_MAX_EXPR_CHARS = 2000  # a recipe's eval() is a short formula; longer input is rejected, not evaluated


def _safe_pow(a: Any, b: Any) -> Any:
    """``a ** b`` that refuses results too large to compute quickly (``9**9**9`` would never end)."""
    if abs(b) > 1000 and abs(a) > 1:
        raise OverflowError(f"{a!r} ** {b!r} is too large")
    return operator.pow(a, b)


_BINOPS[ast.Pow] = _safe_pow


def _eval_expr(expr: str, variables: dict[str, Any], source: str) -> float:
    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in variables:
                raise RecipeError(f"{source}: eval({expr}) uses the unknown variable {node.id!r}")
            v = variables[node.id]
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise KeyError(node.id)  # not resolved yet
            return v
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS and not node.keywords:
            return _FUNCS[node.func.id](*[ev(a) for a in node.args])
        raise RecipeError(f"{source}: eval({expr}) uses something other than numbers, variables, + - * / // ** % "
                          "and abs/float/int/min/max/round")

    if len(expr) > _MAX_EXPR_CHARS:
        raise RecipeError(f"{source}: an eval() expression is longer than {_MAX_EXPR_CHARS} characters")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
        return ev(tree)
    except (SyntaxError, RecursionError, MemoryError):
        raise RecipeError(f"{source}: eval({expr[:80]}) is not a valid expression") from None
    except (ZeroDivisionError, OverflowError, TypeError, ValueError) as exc:
        raise RecipeError(f"{source}: eval({expr[:80]}) failed: {exc}") from None


_EVAL_RE = re.compile(r"^\s*eval\((.*)\)\s*$", re.S)


def _resolve_variables(doc: dict[str, Any], source: str) -> dict[str, Any]:
    variables = {k: v for k, v in doc.items() if "modifiers" not in str(k) and k != "version"}
    for _ in range(len(variables) + 2):
        changed = False
        for k, v in list(variables.items()):
            if isinstance(v, str) and _EVAL_RE.match(v):
                try:
                    variables[k] = _eval_expr(_EVAL_RE.match(v).group(1), variables, source)
                    changed = True
                except KeyError:
                    pass
        if not changed:
            break
    for k, v in variables.items():
        if isinstance(v, str) and _EVAL_RE.match(v):
            raise RecipeError(f"{source}: variable {k!r} cannot be resolved (a cycle or an unknown name)")
    return variables


def _subst(value: Any, variables: dict[str, Any], source: str) -> Any:
    if isinstance(value, str):
        m = _EVAL_RE.match(value)
        if m:
            try:
                return _eval_expr(m.group(1), variables, source)
            except KeyError as exc:
                raise RecipeError(f"{source}: variable {exc.args[0]!r} has no numeric value") from None
        return value
    if isinstance(value, list):
        return [_subst(v, variables, source) for v in value]
    if isinstance(value, dict):
        return {k: _subst(v, variables, source) for k, v in value.items()}
    return value


# ---------------------------------------------------------------- import
def _num(props: dict, key: str, tag: str, source: str, default: Any = None) -> float:
    v = props.get(key, default)
    if v is None:
        raise RecipeError(f"{source}: !{tag} has no {key}")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        try:
            v = float(str(v))
        except ValueError:
            raise RecipeError(f"{source}: !{tag} {key} must be a number, got {v!r}") from None
    v = float(v)
    if not math.isfinite(v):
        raise RecipeError(f"{source}: !{tag} {key} must be finite, got {v!r}")
    return v


def _bare_tag(tag: str) -> str:
    return tag.lstrip("!").split(".")[-1]


def _resolve_params(params: Any, graph: "ModelGraph", inverse: dict[str, str], tag: str, source: str,
                    warnings: list[str]) -> list[str]:
    names = _weight_names(graph)  # id -> onnx weight name
    by_weight = {w: lid for lid, w in names.items()}
    if isinstance(params, str):
        params = [params]
    if not isinstance(params, list):
        raise RecipeError(f"{source}: !{tag} params must be a list of parameter names")
    out: list[str] = []
    for p in params:
        p = str(p)
        if p in ("__ALL__", "__ALL_PRUNABLE__"):
            out += list(names)
            continue
        if p.startswith("re:"):
            try:
                rx = re.compile(p[3:])
            except re.error as exc:
                raise RecipeError(f"{source}: !{tag} params regex {p!r} is invalid: {exc}") from None
            hits = [lid for lid, w in names.items()
                    if rx.fullmatch(w) or rx.fullmatch(_forward(w, inverse)) or rx.fullmatch(lid)]
            if not hits:
                warnings.append(f"params regex {p!r} matches no prunable layer")
            out += hits
            continue
        w = inverse.get(p, p)
        lid = by_weight.get(w) or (p if p in names else None)
        if lid is None and w.endswith(".weight") is False and (w + ".weight") in by_weight:
            lid = by_weight[w + ".weight"]
        if lid is None:
            warnings.append(f"parameter {p!r} matches no prunable layer of the model: ignored")
            continue
        out.append(lid)
    return out


def _forward(w: str, inverse: dict[str, str]) -> str:
    for fw, onnx in inverse.items():
        if onnx == w:
            return fw
    return w


def _recipe_modifiers(doc: dict[str, Any], source: str) -> list[tuple[str, dict]]:
    """(tag, properties with variables substituted) of every modifier of a (single-stage) recipe."""
    for k, v in doc.items():
        if isinstance(v, dict) and any("modifiers" in str(kk) for kk in v):
            raise RecipeError(f"{source}: staged recipes are not supported (stage {k!r}); "
                              "export each stage as its own recipe")
    mod_lists = [v for k, v in doc.items() if "modifiers" in str(k)]
    if not mod_lists:
        raise RecipeError(f"{source} has no 'modifiers' list: not a SparseML recipe")
    variables = _resolve_variables(doc, source)
    mods: list[tuple[str, dict]] = []
    for lst in mod_lists:
        if not isinstance(lst, list):
            raise RecipeError(f"{source}: 'modifiers' must be a list of !Modifier entries")
        for item in lst:
            if not isinstance(item, dict) or "__tag__" not in item:
                if isinstance(item, dict) and len(item) == 1:  # {GMPruningModifier: {...}} form
                    (k, v), = item.items()
                    item = dict(v or {}, __tag__=str(k))
                else:
                    raise RecipeError(f"{source}: every modifier must be a !Tag mapping, got {item!r}"[:200])
            tag = _bare_tag(str(item["__tag__"]))
            props = _subst({k: v for k, v in item.items() if k != "__tag__"}, variables, source)
            mods.append((tag, props))
    return mods


def _lr_modifier(props: dict, source: str, warns: list[str]) -> LRModifier | None:
    """The LRModifier of a !LearningRateModifier (None, with a warning, for an unsupported lr_class)."""
    tag = "LearningRateModifier"
    where = "LearningRateModifier lr_kwargs"
    cls = str(props.get("lr_class", ""))
    kind = LR_KINDS_BY_CLASS.get(cls)
    if kind is None:
        warns.append(f"!LearningRateModifier with lr_class {cls!r} is not supported: ignored")
        return None
    kw = props.get("lr_kwargs") or {}
    if not isinstance(kw, dict):
        raise RecipeError(f"{source}: !LearningRateModifier lr_kwargs must be a mapping")
    args: dict[str, Any] = {}
    if "gamma" in kw:
        args["gamma"] = _num(kw, "gamma", where, source)
    if kind == "step":
        args["step_size"] = _num(kw, "step_size", where, source, 1.0)
    if kind == "multi_step":
        ms = kw.get("milestones", [])
        if not isinstance(ms, list):
            raise RecipeError(f"{source}: !LearningRateModifier milestones must be a list of epochs")
        args["milestones"] = [_num({"m": x}, "m", "LearningRateModifier milestones", source) for x in ms]
    if kind == "cosine":
        args["lr_min"] = _num(kw, "lr_min", where, source, 0.0)
        args["cycle_epochs"] = _num(kw, "cycle_epochs", where, source, 1.0)
    return LRModifier(kind=kind, start_epoch=max(_num(props, "start_epoch", tag, source, 0.0), 0.0),
                      end_epoch=_num(props, "end_epoch", tag, source, -1.0),
                      init_lr=_num(props, "init_lr", tag, source), args=args)


def _quantized_layers(ignore: Any, graph: "ModelGraph", inverse: dict[str, str], source: str) -> list[str] | None:
    """The layers a !QuantizationModifier quantizes: all (None) unless its ``ignore`` names modules."""
    ign = ignore or []
    if isinstance(ign, str):
        ign = [ign]
    if not isinstance(ign, list):
        raise RecipeError(f"{source}: !QuantizationModifier ignore must be a list of module names")
    if not ign:
        return None
    names = _weight_names(graph)
    ignored = set()
    for g in ign:
        g = str(g)
        for lid, w in names.items():
            fw = _forward(w, inverse) if inverse else w
            if g in (module_name(fw), module_name(w), fw, w, lid):
                ignored.add(lid)
    return [lid for lid in names if lid not in ignored]


class _Modifiers:
    """What a recipe's modifiers say, read one by one (unsupported ones reported in ``warns``)."""

    def __init__(self, mods: list[tuple[str, dict]], graph: "ModelGraph", inverse: dict[str, str], source: str,
                 warns: list[str]) -> None:
        self.prunes: list[tuple[dict, list[str]]] = []  # (properties, layer ids)
        self.lrs: list[LRModifier] = []
        self.quant = QuantizationSettings(enabled=False)
        self.epoch_range: tuple[float, float] | None = None
        for tag, props in mods:
            if tag == "EpochRangeModifier":
                self.epoch_range = (_num(props, "start_epoch", tag, source, 0.0),
                                    _num(props, "end_epoch", tag, source))
            elif tag in ("GMPruningModifier", "MagnitudePruningModifier"):
                fs = props.get("final_sparsity")
                if isinstance(fs, dict):  # {sparsity: [params]} form
                    for s, ps in fs.items():
                        p2 = dict(props, final_sparsity=_num({"s": s}, "s", tag, source))
                        self.prunes.append((p2, _resolve_params(ps, graph, inverse, tag, source, warns)))
                else:
                    self.prunes.append(
                        (props, _resolve_params(props.get("params", []), graph, inverse, tag, source, warns)))
            elif tag == "SetLearningRateModifier":
                self.lrs.append(LRModifier(kind="set",
                                           start_epoch=max(_num(props, "start_epoch", tag, source, 0.0), 0.0),
                                           end_epoch=-1.0, init_lr=_num(props, "learning_rate", tag, source)))
            elif tag == "LearningRateModifier":
                lr = _lr_modifier(props, source, warns)
                if lr is not None:
                    self.lrs.append(lr)
            elif tag == "QuantizationModifier":
                self.quant.enabled = True
                self.quant.start_epoch = max(_num(props, "start_epoch", tag, source, 0.0), 0.0)
                layers = _quantized_layers(props.get("ignore"), graph, inverse, source)
                if layers is not None:
                    self.quant.layers = layers
            else:
                warns.append(f"!{tag} is not supported by sparsify-tui: ignored")

    def sparsities(self, source: str, warns: list[str]) -> dict[str, float]:
        """{layer id: final sparsity} over the pruning modifiers (the last one wins)."""
        sparsity: dict[str, float] = {}
        for props, lids in self.prunes:
            fs = _num(props, "final_sparsity", "GMPruningModifier", source)
            if not (0.0 < fs < 1.0):
                raise RecipeError(
                    f"{source}: !GMPruningModifier final_sparsity must be strictly between 0 and 1, got {fs:g}")
            for lid in lids:
                if lid in sparsity and sparsity[lid] != fs:
                    warns.append(f"layer {lid!r} appears in two pruning modifiers: the last one ({fs:g}) is used")
                sparsity[lid] = fs
        return sparsity

    def pruning(self, starts: list[float], ends: list[float], source: str, warns: list[str]) -> PruningSettings:
        """The pruning settings of the modifiers (their epoch ranges' union; the first one's schedule)."""
        tag = "GMPruningModifier"
        pr = PruningSettings()
        if not self.prunes:
            pr.enabled = False
            return pr
        first = self.prunes[0][0]
        pr.start_epoch, pr.end_epoch = min(starts), max(ends)
        if len(set(starts)) > 1 or len(set(ends)) > 1:
            warns.append("pruning modifiers have different epoch ranges: their union is used")
        pr.update_frequency = _num(first, "update_frequency", tag, source, 1.0)
        inits = [_num(p, "init_sparsity", tag, source, 0.05)
                 if not isinstance(p.get("init_sparsity"), str) else 0.05 for p, _ in self.prunes]
        pr.init_sparsity = max(inits)
        pr.interpolation = str(first.get("inter_func", "cubic"))
        mt = first.get("mask_type", "unstructured")
        if not isinstance(mt, str):
            warns.append(f"mask_type {mt!r} (a block shape) is not supported: unstructured is used")
        pr.mask_type = mt if isinstance(mt, str) else "unstructured"
        if pr.interpolation not in INTERPOLATIONS:
            raise RecipeError(f"{source}: inter_func {pr.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
        if pr.mask_type not in MASK_TYPES:
            raise RecipeError(f"{source}: mask_type {mt!r} is not supported (use {', '.join(MASK_TYPES)})")
        pr.leave_enabled = bool(first.get("leave_enabled", True))
        return pr


def _exported_optimization(meta: dict, sparsity: dict[str, float], prunable: list["Layer"]) -> Optimization:
    """The optimization saved in an unedited export, with the recipe's sparsities."""
    opt = Optimization.from_dict(meta.get("optimization") or {})
    opt.plan = opt.plan.with_sparsities(sparsity, [lay.id for lay in prunable])
    opt.validate()
    return opt


def import_recipe(text: str, graph: "ModelGraph", name_map: dict[str, str] | None = None,
                  warnings: list[str] | None = None, source: str = "recipe") -> Optimization:
    """An Optimization from recipe text. Unknown names and modifiers are reported in ``warnings``."""
    warns: list[str] = [] if warnings is None else warnings
    mods = _recipe_modifiers(load_recipe_yaml(text, source), source)
    inverse = {fw: onnx for onnx, fw in (name_map or {}).items()}
    meta = _read_meta(text)
    if meta is not None and meta.get("mapped") and not name_map:
        raise RecipeError(f"{source} was exported with a name map (framework parameter names): "
                          "import it with the same --name-map")
    body = text[text.index("version:"):] if meta is not None and "version:" in text else None
    found = _Modifiers(mods, graph, inverse, source, warns)
    sparsity = found.sparsities(source, warns)
    prunable = graph.prunable_layers
    if meta is not None and body is not None and meta.get("digest") == _digest(body):
        return _exported_optimization(meta, sparsity, prunable)

    # ---- a foreign (or edited) recipe
    opt = Optimization(name="imported", epochs=0)
    if meta is not None:
        warns.append("the recipe was edited after export: its modifiers are used, the saved allocation settings are not")
        mo = meta.get("optimization") or {}
        opt.name = str(mo.get("name") or "imported")
        opt.notes = str(mo.get("notes") or "")
    opt.created = opt.modified = now_iso()
    starts = [_num(p, "start_epoch", "GMPruningModifier", source, 0.0) for p, _ in found.prunes]
    ends = [_num(p, "end_epoch", "GMPruningModifier", source) for p, _ in found.prunes]
    lrs, quant = found.lrs, found.quant
    all_ends = ends + [m.end_epoch for m in lrs] + [m.start_epoch + 1 for m in lrs] + (
        [quant.start_epoch + 1] if quant.enabled else [])
    epoch_range = found.epoch_range or (0.0, max([e for e in all_ends if e > 0] or [1.0]))
    opt.start_epoch, opt.end_epoch = float(epoch_range[0]), float(epoch_range[1])
    opt.epochs = max(1, int(math.ceil(opt.end_epoch)))
    pr = found.pruning(starts, ends, source, warns)
    n = {lay.id: lay.prunable_params for lay in prunable}
    N = sum(n.values())
    ach = sum(n[k] * s for k, s in sparsity.items() if k in n) / N if N else 0.0
    pr.target_sparsity = round(ach, 6)
    pr.buckets = 0  # keep the recipe's values as they are
    pr.overrides = dict(sparsity)
    opt.pruning = pr
    opt.lr_modifiers = lrs
    opt.quantization = quant
    opt.plan.entries = {lay.id: LayerPlan(sparsity.get(lay.id, 0.0), overridden=lay.id in sparsity)
                        for lay in prunable}
    try:
        opt.validate()
    except UsageError as exc:
        raise RecipeError(f"{source}: {exc.message}") from None
    return opt


def _read_meta(text: str) -> dict | None:
    for line in text.splitlines()[:10]:
        if line.startswith(META_PREFIX):
            try:
                d = json.loads(line[len(META_PREFIX):])
            except ValueError:
                return None
            return d if isinstance(d, dict) else None
    return None


# ---------------------------------------------------------------- name maps
def load_name_map(path: str | Path, graph: "ModelGraph | None" = None) -> tuple[dict[str, str], list[str]]:
    """Read a name map (JSON object or CSV ``onnx_name,framework_name``); returns (map, warnings).

    With ``graph``, names that are no prunable layer's ONNX weight name are reported as warnings.
    """
    p = Path(path).expanduser()
    text = read_user_text(p, "name map", encoding="utf-8-sig")
    mapping: dict[str, str] = {}
    warns: list[str] = []
    stripped = text.lstrip()
    if stripped.startswith("{") or p.suffix.lower() == ".json":
        try:
            d = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"name map {p} is not valid JSON: {exc}") from None
        if not isinstance(d, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in d.items()):
            raise UsageError(f"name map {p} must be a JSON object of ONNX name to framework name strings")
        mapping = dict(d)
    else:
        rows = list(csv.reader(io.StringIO(text)))
        for i, row in enumerate(rows):
            if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
                continue
            if len(row) != 2:
                raise UsageError(f"name map {p} line {i + 1} must have 2 columns (onnx_name,framework_name), got {len(row)}")
            a, b = row[0].strip(), row[1].strip()
            if i == 0 and a.lower() in ("onnx_name", "onnx", "onnx name") :
                continue
            if not a or not b:
                raise UsageError(f"name map {p} line {i + 1} has an empty name")
            if a in mapping and mapping[a] != b:
                warns.append(f"{a!r} is mapped twice; the last entry ({b!r}) is used")
            mapping[a] = b
    if not mapping:
        raise UsageError(f"name map {p} is empty")
    seen: dict[str, str] = {}
    for a, b in mapping.items():
        if b in seen:
            warns.append(f"framework name {b!r} is the target of both {seen[b]!r} and {a!r}")
        seen[b] = a
    if graph is not None:
        known = set(_weight_names(graph).values())
        unknown = [a for a in mapping if a not in known]
        if unknown:
            more = f" (and {len(unknown) - 3} more)" if len(unknown) > 3 else ""
            warns.append(f"{len(unknown)} name(s) in {p.name} are no prunable layer's ONNX weight name: "
                         f"{', '.join(repr(x) for x in unknown[:3])}{more}")
        missing = len(known - set(mapping))
        if missing:
            warns.append(f"{missing} prunable weight(s) have no entry in {p.name} and keep their ONNX names")
    return mapping, warns


__all__ = ["export_recipe", "import_recipe", "load_name_map", "load_recipe_yaml", "module_name", "REASON_USER"]
