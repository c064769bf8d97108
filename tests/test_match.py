"""match: tiers, alignment, ambiguity, rules and the Plan's JSON form."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import weightgraft as wg
from weightgraft.checkpoint import Checkpoint, Convention, Kind, Role, TensorEntry
from weightgraft.match import Plan
from weightgraft.match.align import align
from weightgraft.match.groups import canonical_shape, normalise_name
from weightgraft.match.plan import Ambiguity, Assignment
from weightgraft.match.rules import RenameRules, SkipRules


# -- pure parts ----------------------------------------------------------------------------

@pytest.mark.parametrize("name,expected", [
    ("module.features.0", "features.0"),
    ("_orig_mod.module.fc", "fc"),
    ("conv1/conv1_3/kernel:0", "conv1.kernel"),
    ("conv1-BN", "conv1_bn"),
    ("model.layers.3", "layers.3"),
    ("block1_conv1", "block1_conv1"),
    ("dense_12", "dense"),
])
def test_normalise_name(name: str, expected: str) -> None:
    assert normalise_name(name) == expected


def test_alignment_survives_an_inserted_layer() -> None:
    src = ["c8", "c16", "c32", "d64", "d10"]
    tgt = ["c8", "c16", "bn16", "c32", "d64", "d10"]
    certain, unsure = align(src, tgt)
    assert certain == [(0, 0), (1, 1), (2, 3), (3, 4), (4, 5)] and unsure == {}


def test_alignment_survives_a_removed_layer() -> None:
    certain, unsure = align(["a", "b", "c", "d"], ["a", "c", "d"])
    assert certain == [(0, 0), (2, 1), (3, 2)] and unsure == {}


def test_alignment_reports_ties_instead_of_picking() -> None:
    # Two identical source layers, one target slot between fixed neighbours.
    certain, unsure = align(["a", "x", "x", "b"], ["a", "x", "b"])
    assert certain == [(0, 0), (3, 2)]
    assert unsure == {1: [1, 2]}


def test_canonical_shape_uses_the_layout_rules() -> None:
    assert canonical_shape(Kind.CONV2D, "kernel", Convention.TORCH, (8, 3, 5, 4)) == (5, 4, 3, 8)
    assert canonical_shape(Kind.DENSE, "kernel", Convention.TORCH, (10, 7)) == (7, 10)
    assert canonical_shape(Kind.CONV2D, "kernel", Convention.THEANO, (8, 3, 5, 4)) == (5, 4, 3, 8)


def test_rename_rules_first_match_wins_and_no_chaining() -> None:
    rules = RenameRules.parse(["a.*=b.*", "b.*=c.*"])
    assert rules.apply("a.weight") == "b.weight"  # not "c.weight": rules do not chain
    assert rules.apply("b.weight") == "c.weight"
    assert rules.apply("z") == "z"
    assert RenameRules.parse({r"re:^enc\.(\d+)\.(.*)$": r"encoder.\1.\2"}).apply(
        "enc.3.bias") == "encoder.3.bias"


def test_bad_rules_are_plan_errors() -> None:
    with pytest.raises(wg.PlanError, match="OLD=NEW"):
        RenameRules.parse(["no-equals-sign"])
    with pytest.raises(wg.PlanError, match="regular expression"):
        RenameRules.parse({"re:(": "x"})
    assert SkipRules.parse("head*").matches("head.weight")


# -- Plan JSON ------------------------------------------------------------------------------

def _assignment(**changes: object) -> Assignment:
    fields = dict(target_layer="fc", source_layer="dense_1", kind="dense", tier="structure",
                  confidence=0.9, source_keys=("dense_1/kernel:0", "dense_1/bias:0"),
                  source_roles=("kernel", "bias"), target_keys=("fc.weight", "fc.bias"),
                  target_roles=("kernel", "bias"), src_convention="keras",
                  dst_convention="torch", context={"flatten": {"feature_shape": {"c": 2}}},
                  steps=("kernel: transpose axes (1, 0)",))
    fields.update(changes)
    return Assignment(**fields)  # type: ignore[arg-type]


def test_plan_json_round_trip_and_save_load(tmp_path: Path) -> None:
    plan = Plan(assignments=(_assignment(),), unmatched_targets=("head.weight",),
                unused_sources=("x",), ambiguous=(Ambiguity("target", "a", ("b", "c"), "shape",
                                                            "tie"),),
                notes=("n",), source="s.h5", source_convention="keras", target_framework="torch")
    assert Plan.from_json(plan.to_json()) == plan
    path = tmp_path / "plan.json"
    plan.save(path)
    assert Plan.load(path) == plan
    assert json.loads(path.read_text())["format"] == "weightgraft.plan"


def test_broken_plans_name_the_file_and_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text("{not json")
    with pytest.raises(wg.PlanError, match="plan.json.*not valid JSON"):
        Plan.load(path)
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(wg.PlanError, match="not a weightgraft plan"):
        Plan.load(path)
    data = Plan(assignments=(_assignment(),)).to_dict()
    data["assignments"][0]["source_roles"] = ["kernel"]
    path.write_text(json.dumps(data))
    with pytest.raises(wg.PlanError, match="one role per source key"):
        Plan.load(path)
    with pytest.raises(wg.PlanError, match="cannot read plan"):
        Plan.load(tmp_path / "missing.json")


# -- matching real models ---------------------------------------------------------------------

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")


def _torch_checkpoint(model: torch.nn.Module, prefix: str = "") -> Checkpoint:
    """A torch state dict as a described checkpoint (what the PyTorch reader produces)."""
    mv = wg.view(model)
    entries = [TensorEntry.from_array(prefix + s.key, mv.read(s.key), layer=prefix + s.layer,
                                      kind=s.kind, role=s.role, convention=Convention.TORCH)
               for s in mv.slots.values()]
    return Checkpoint(entries, format="memory", convention=Convention.TORCH)


def test_wrapped_keys_match_by_normalised_name() -> None:
    nn = torch.nn
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    ck = _torch_checkpoint(net, prefix="module._orig_mod.")
    plan = wg.match(ck, nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    assert {a.tier for a in plan.assignments} == {"normalised"}
    assert [a.target_layer for a in plan.assignments] == ["0", "2"]


def test_exact_keys_win_and_num_batches_tracked_travels() -> None:
    nn = torch.nn
    make = lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))  # noqa: E731
    src = make()
    ck = _torch_checkpoint(src)
    plan = wg.match(ck, make())
    assert {a.tier for a in plan.assignments} == {"exact"}
    assert "1.num_batches_tracked" in plan.by_target_key()


def test_keras_names_into_torch_by_structure_with_roles() -> None:
    nn = torch.nn
    k = keras.Sequential([keras.Input((5,)), keras.layers.Dense(7, name="hidden"),
                          keras.layers.Dense(3, name="out")])
    t = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    plan = wg.match(k, t)
    a = plan.by_target_key()["0.weight"]
    assert (a.source_layer, a.tier, a.src_convention, a.dst_convention) == (
        "hidden", "structure", "keras", "torch")
    assert dict(zip(a.target_keys, a.source_keys)) == {"0.weight": "hidden/kernel",
                                                      "0.bias": "hidden/bias"}


def test_identical_layers_in_a_different_order_are_ambiguous_not_guessed() -> None:
    nn = torch.nn
    src = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 6))
    # Target has two of them: which two source layers fill them cannot be told by structure.
    tgt = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))
    ck = _torch_checkpoint(src, prefix="enc.")
    plan = wg.match(ck, tgt)
    assert plan.assignments == ()
    assert {a.subject for a in plan.ambiguous} == {"0", "2"}
    assert set(plan.unmatched_targets) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    with pytest.raises(wg.PlanError, match="ambiguous"):
        wg.transplant(ck, tgt)


def test_skip_leaves_target_slots_at_their_initial_value() -> None:
    nn = torch.nn
    src = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    tgt = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    before = tgt[1].weight.detach().clone()
    report = wg.transplant(_torch_checkpoint(src), tgt, skip=["1.*"])
    assert report.slot("1.weight").status == "initial"
    assert torch.equal(tgt[1].weight, before)
    assert torch.equal(tgt[0].weight, src[0].weight)
    assert set(report.ignored_sources) == {"1.weight", "1.bias"}


def test_source_convention_override_is_noted() -> None:
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(2, 3, 3))
    plan = wg.match(_torch_checkpoint(net), nn.Sequential(nn.Conv2d(2, 3, 3)),
                    source_convention="theano")
    assert any("forced to theano" in n for n in plan.notes)
    assert any("flip" in s for a in plan.assignments for s in a.steps)


def test_alignment_of_600_layers_with_one_removed_pairs_all_the_others() -> None:
    """Speed is measured in bench/bench_match.py; this checks the long alignment is right."""
    n = 600
    entries = []
    for i in range(n):
        w = np.zeros((8 + i % 5, 8 + (i + 1) % 5), np.float32)
        entries.append(TensorEntry.from_array(f"blocks.{i}.weight", w, layer=f"blocks.{i}",
                                              kind=Kind.DENSE, role=Role.KERNEL,
                                              convention=Convention.TORCH))
    ck = Checkpoint(entries, format="memory", convention=Convention.TORCH)
    from weightgraft.match.groups import source_groups
    groups, _ = source_groups(ck)
    certain, unsure = align([g.signature() for g in groups],
                            [g.signature() for g in groups[:300] + groups[301:]])
    assert len(certain) == n - 1 and not unsure


def test_a_plan_prints_as_a_table_with_what_it_leaves_open() -> None:
    """Found by audit: print(plan) showed the raw dataclass."""
    torch = pytest.importorskip("torch")
    a = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    b = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 5))
    text = str(wg.match(wg.view(a, input_shape=(4,)), wg.view(b, input_shape=(4,))))
    assert "match plan" in text and "exact" in text and "Assignment(" not in text
    assert "unmatched target slots (2): 1.weight, 1.bias" in text
    assert "not paired: 1 <- 1: shapes differ" in " ".join(text.split())
