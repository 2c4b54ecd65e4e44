"""The optimization being edited, its undo history and its saving: the optimizer screen's model (no Textual).

API::

    ed = OptimizationEditor(project, ctx)      # ctx: an OptimizerContext (graph, evaluator, profile ids)
    fresh = ed.open(name)                      # the stored optimization, or a new default one (fresh)
    ed.opt, ed.est                             # the allocated optimization and its estimates
    ed.step("target_sparsity", 1)              # every edit returns its undo label ...
    ed.set("epochs", "abc")                    # ... or raises UsageError with one sentence
    ed.step_layer(lid, 1); ed.set_layer(lid, "80%"); ed.reset(lid); ed.toggle_exclude(lid)
    ed.set_lr(None, "step start=60 ..."); ed.delete_lr(0)
    ed.undo(), ed.redo()                       # the label undone / redone, or None
    ed.copy_version(), ed.next_version(), ed.switch(name)
    ed.dirty, ed.save(), ed.save_error         # save() keeps the stored keys other tools wrote

Every edit validates the new optimization before anything changes, pushes the
state before it on the per-name undo history, marks the editor dirty and
re-runs the allocation and the estimates. The screen calls these, shows the
error or the new plan, and schedules the save.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sparsify_tui.actions.optimizer import default_optimization_name
from sparsify_tui.actions.optimizer_settings import (
    SETTING_BY_KEY,
    fmt_setting,
    get_setting,
    lr_to_text,
    next_version_name,
    parse_lr,
    parse_setting,
    with_setting,
)
from sparsify_tui.actions.undo import UndoHistory
from sparsify_tui.errors import UsageError
from sparsify_tui.optim.optimization import REASON_USER, Optimization, default_optimization
from sparsify_tui.settings import parse_sparsity

if TYPE_CHECKING:
    from sparsify_tui.actions.optimizer import OptimizerContext
    from sparsify_tui.project import Project


def target_drop_note(old_opt: Any, old_est: Any, new_opt: Any, new_est: Any) -> str:
    """Why an estimate fell when only the target sparsity rose ("" when none fell).

    Per layer the allocation only ever adds sparsity as the target rises, so
    with Buckets 0 no estimate falls; grouping the plan into a few sparsity
    values (one recipe modifier each) can regroup layers and lower one.
    """
    if old_opt is None or old_est is None or new_opt is None or new_est is None:
        return ""
    a, b = old_opt.pruning, new_opt.pruning
    if not b.target_sparsity > a.target_sparsity + 1e-9:
        return ""
    same = (a.enabled, a.balance, a.max_sparsity, a.min_sparsity, a.min_speedup, a.min_recovery, a.buckets,
            a.protect_edges, a.tiny_params, sorted(a.overrides.items()), sorted(a.exclusions.items()))
    if same != (b.enabled, b.balance, b.max_sparsity, b.min_sparsity, b.min_speedup, b.min_recovery, b.buckets,
                b.protect_edges, b.tiny_params, sorted(b.overrides.items()), sorted(b.exclusions.items())):
        return ""
    if new_est.estimated_speedup < old_est.estimated_speedup - 5e-5:
        fell = f"Speedup fell {old_est.estimated_speedup:.2f}x→{new_est.estimated_speedup:.2f}x"
    elif old_est.flops_reduction and new_est.flops_reduction and \
            new_est.flops_reduction < old_est.flops_reduction - 5e-5:
        fell = f"FLOPs reduction fell {old_est.flops_reduction:.2f}x→{new_est.flops_reduction:.2f}x"
    else:
        return ""
    if b.buckets > 0:
        return f"{fell} as the target rose: {b.buckets} buckets regrouped layers (Buckets 0 avoids this)"
    return f"{fell} as the target rose: a filter or the balance chose another plan"


class OptimizationEditor:
    """One optimization of a project under edit: ``opt`` (allocated), ``est``, undo histories, ``dirty``."""

    def __init__(self, project: "Project | None" = None, context: "OptimizerContext | None" = None) -> None:
        self.project = project
        self.ctx: Any = None
        self.opt: Optimization | None = None
        self.est: Any = None
        self.layer_ids: set[str] = set()
        self.histories: dict[str, UndoHistory] = {}
        self.dirty = False
        self.save_error = ""
        self.shown_at = 0.0
        if context is not None:
            self.bind(context)

    def bind(self, ctx: "OptimizerContext") -> None:
        """Use this context's graph and evaluator from now on."""
        self.ctx = ctx
        self.layer_ids = {lay.id for lay in ctx.graph.layers}
        setup = getattr(ctx.evaluator, "setup", None)  # a channel optimization: its rows are channel groups
        if setup is not None:
            self.layer_ids |= {g.id for g in setup.groups}

    # ------------------------------------------------------------ loading and estimates
    def open(self, name: str | None = None) -> bool:
        """Edit the stored optimization ``name`` (the project's default one if None); with none stored,
        a new default optimization (returns True: it is not saved yet, so the editor is dirty)."""
        name = name or default_optimization_name(self.project)
        stored = self.project.get_optimization(name) if self.project is not None else None
        if stored:
            self.show(Optimization.from_dict(stored), first=True)
            return False
        self.show(self.ctx.attach(default_optimization(self.ctx.graph, name=name)), first=True)
        self.dirty = True
        return True

    def reattach(self) -> None:
        """The project's profiles changed: the same optimization, estimated with the context's profiles."""
        opt = self.ctx.attach(self.opt.copy())
        self.dirty = True
        self.show(opt)

    def show(self, opt: Optimization, *, first: bool = False) -> None:
        """Allocate and estimate ``opt`` and make it current (not undoable: :meth:`apply` is)."""
        self.shown_at = time.perf_counter()  # the screen times allocation, estimates and redraw from here
        old_opt, old_est = (None, None) if first else (self.opt, self.est)
        self.opt, self.est = self.ctx.evaluator.run(opt)
        drop = target_drop_note(old_opt, old_est, self.opt, self.est)
        if drop:
            self.est.notes.append(drop)
        self.histories.setdefault(self.opt.name, UndoHistory())

    def perf_profile_name(self) -> str:
        """The name of the stored perf profile the estimates come from ("" when approximated from FLOPs)."""
        pid = (getattr(self.ctx, "profile_ids", None) or {}).get("perf", "")
        if not pid or self.project is None:
            return ""
        return next((e.name for e in self.project.profiles_of("perf") + self.project.profiles_of("perf_channels")
                     if e.id == pid), "")

    # ------------------------------------------------------------ edits (each returns its undo label)
    def apply(self, new: Optimization, label: str) -> str:
        """Validate ``new`` (UsageError if bad, nothing changed) and make it current, undoable as ``label``."""
        new.validate(self.layer_ids)
        self.histories.setdefault(self.opt.name, UndoHistory()).push(self.opt.to_dict(), label)
        self.dirty = True
        self.show(new)
        return label

    def step(self, key: str, n: int) -> str:
        """Step setting ``key`` by ``n`` steps (clamped to its limits), a bool flips, a choice cycles."""
        s = SETTING_BY_KEY[key]
        value = get_setting(self.opt, s.key)
        if s.kind == "bool":
            new_value: Any = not value
        elif s.kind == "choice":
            i = s.choices.index(value) if value in s.choices else 0
            new_value = s.choices[(i + (1 if n > 0 else -1)) % len(s.choices)]
        else:
            new_value = round(value + s.step * n, 6)
            if s.kind == "int":
                new_value = int(new_value)
            if s.lo is not None and new_value < s.lo:
                new_value = s.lo if value > s.lo else None
            if s.hi is not None and new_value is not None and new_value > s.hi:
                new_value = s.hi if value < s.hi else None
            if new_value is None:
                raise UsageError(f"{s.label} is already at its limit {value:g}")
        return self.apply(with_setting(self.opt, s.key, new_value), f"{s.label} {value} -> {new_value}")

    def set(self, key: str, text: str) -> str:
        """Setting ``key`` typed as ``text``."""
        s = SETTING_BY_KEY[key]
        value = parse_setting(s, text)
        return self.apply(with_setting(self.opt, s.key, value), f"{s.label} = {value}")

    def edit_field(self, kind: str, what: Any) -> tuple[str, str]:
        """(prompt, starting text) of the field where a value is typed: ``kind`` "setting" (``what`` its key),
        "layer" (a layer id) or "lr" (a modifier's index, None for a new one)."""
        if kind == "layer":
            r = self.opt.layers.get(what)
            return f"sparsity of {what} (0-0.99 or %):", f"{r.sparsity:g}" if r else "0"
        if kind == "lr":
            if what is None:
                return "new LR modifier:", self.new_lr_text()
            return f"LR modifier {what + 1}:", lr_to_text(self.opt.lr_modifiers[what])
        s = SETTING_BY_KEY[what]
        text = fmt_setting(self.opt, s)
        return f"{s.label}:", text.replace("off", "0") if s.kind != "bool" else text

    def edit(self, kind: str, what: Any, text: str) -> str:
        """The value typed in the field of :meth:`edit_field` (kind, what)."""
        return {"setting": self.set, "layer": self.set_layer, "lr": self.set_lr}[kind](what, text)

    def step_layer(self, lid: str, n: int) -> str:
        """Override layer ``lid`` at its sparsity + ``n`` %, kept in [0, 0.99]."""
        cur = self.opt.layers.get(lid)
        s = round((cur.sparsity if cur else 0.0) + 0.01 * n, 4)
        return self.override(lid, min(max(s, 0.0), 0.99))

    def set_layer(self, lid: str, text: str) -> str:
        """Override layer ``lid`` at the typed sparsity (0.8 or 80%)."""
        return self.override(lid, parse_sparsity(text))

    def override(self, lid: str, s: float) -> str:
        new = self.opt.copy()
        new.pruning.overrides[lid] = float(s)
        new.pruning.exclusions.pop(lid, None)
        return self.apply(new, f"override {lid} = {s:g}")

    def reset(self, lid: str) -> str:
        """Give layer ``lid`` back to the allocation (its override or exclusion goes)."""
        p = self.opt.pruning
        if lid not in p.overrides and lid not in p.exclusions:
            raise UsageError(f"layer {lid} has no override to reset")
        new = self.opt.copy()
        new.pruning.overrides.pop(lid, None)
        new.pruning.exclusions.pop(lid, None)
        return self.apply(new, f"reset {lid}")

    def toggle_exclude(self, lid: str) -> str:
        """Leave layer ``lid`` dense, or include it again."""
        new = self.opt.copy()
        if lid in new.pruning.exclusions:
            new.pruning.exclusions.pop(lid)
            label = f"include {lid}"
        else:
            new.pruning.overrides.pop(lid, None)
            new.pruning.exclusions[lid] = REASON_USER
            label = f"exclude {lid}"
        return self.apply(new, label)

    def new_lr_text(self) -> str:
        """A new LR modifier's text: a step decay from the end of pruning (or the start), in four steps."""
        p = self.opt.pruning
        start = p.end_epoch if p.enabled else self.opt.start_epoch
        span = max(1.0, (self.opt.end_epoch - start) / 4)
        lr0 = self.opt.lr_modifiers[0].init_lr if self.opt.lr_modifiers else 0.01
        return f"step start={start:g} end=-1 lr={lr0:g} gamma=0.1 step_size={span:g}"

    def set_lr(self, index: int | None, text: str) -> str:
        """LR modifier ``index`` (None: a new one) typed as ``text``."""
        m = parse_lr(text)
        new = self.opt.copy()
        if index is None:
            new.lr_modifiers.append(m)
        else:
            new.lr_modifiers[index] = m
        return self.apply(new, f"LR modifier {m.kind}")

    def delete_lr(self, index: int) -> str:
        new = self.opt.copy()
        m = new.lr_modifiers.pop(index)
        return self.apply(new, f"remove LR modifier {index + 1} ({m.kind})")

    # ------------------------------------------------------------ undo
    def undo(self) -> str | None:
        """Go back one edit of this optimization: its label, or None when there is none."""
        return self._restore(self.histories.setdefault(self.opt.name, UndoHistory()).undo)

    def redo(self) -> str | None:
        return self._restore(self.histories.setdefault(self.opt.name, UndoHistory()).redo)

    def _restore(self, move: Any) -> str | None:
        got = move(self.opt.to_dict())
        if got is None:
            return None
        label, state = got
        self.dirty = True
        self.show(Optimization.from_dict(state))
        return label

    # ------------------------------------------------------------ versions
    def version_names(self) -> list[str]:
        if self.project is None:
            return [self.opt.name] if self.opt else []
        return [str(o.get("name")) for o in self.project.optimizations]

    def copy_version(self) -> str:
        """Make a copy of the optimization, named ``<base>-vN``, the current one (unsaved): its name."""
        name = next_version_name(self.version_names(), self.opt.name.split("-v")[0])
        self.dirty = True
        self.show(self.opt.copy(name=name))
        return name

    def next_version(self) -> str | None:
        """The name of the version after this one (None when there is only one)."""
        names = self.version_names()
        if len(names) < 2:
            return None
        i = names.index(self.opt.name) if self.opt.name in names else -1
        return names[(i + 1) % len(names)]

    def switch(self, name: str) -> bool:
        """Edit the stored version ``name`` (False if there is none)."""
        d = self.project.get_optimization(name)
        if d is None:
            return False
        self.show(Optimization.from_dict(d))
        return True

    # ------------------------------------------------------------ saving
    @property
    def needs_save(self) -> bool:
        return self.dirty and self.opt is not None and self.project is not None

    def save(self) -> bool:
        """Store the optimization, keeping the keys other tools stored in it (e.g. its validation).

        False when it could not be written (read-only project, disk full): the
        editor stays dirty and ``save_error`` says why.
        """
        if not self.needs_save:
            return True
        d = self.opt.to_dict()
        current = self.project.get_optimization(self.opt.name) or {}
        for k, v in current.items():  # keep what other tools stored (e.g. the validation section)
            d.setdefault(k, v)
        try:
            self.opt.touch()
            d["modified"] = self.opt.modified
            self.project.set_optimization(d)
        except Exception as exc:  # noqa: BLE001 - read-only project, disk full: stay dirty, say why
            self.save_error = str(exc)
            return False
        self.dirty = False
        self.save_error = ""
        return True
