"""heapa.tasks: the graded local math task set (deterministic, disjoint splits, answers checked by math-verify)."""

from __future__ import annotations

import pytest

pytest.importorskip("datasets")

from heapa.tasks import (
    INSTRUCTION,
    LEVELS,
    PROBLEM_PATTERN,
    level_capacity,
    math_tasks,
    math_verify_reward,
    problems,
    reference_answer,
)


def texts(split):
    return [p[0]["content"] for p in split["prompt"]]


def test_columns_levels_and_sizes():
    ds = math_tasks(100, heldout_per_level=6, dev_per_level=4, seed=0)
    assert set(ds) == {"train", "heldout", "dev"}
    assert ds["train"].column_names == ["prompt", "answer", "level"]
    assert len(ds["train"]) == 100 and len(ds["heldout"]) == 6 * len(LEVELS) and len(ds["dev"]) == 4 * len(LEVELS)
    assert sorted(set(ds["train"]["level"])) == sorted(LEVELS)
    assert all(ds["train"]["level"].count(lv) == 20 for lv in LEVELS)
    prompt = ds["train"][0]["prompt"]
    assert prompt[0]["role"] == "user" and prompt[0]["content"].endswith(INSTRUCTION)


def test_deterministic_by_seed_and_disjoint():
    a, b = math_tasks(200, seed=3), math_tasks(200, seed=3)
    for split in ("train", "heldout", "dev"):
        assert a[split].to_list() == b[split].to_list()
    assert texts(math_tasks(200, seed=4)["train"]) != texts(a["train"])
    sets = {name: set(texts(a[name])) for name in ("train", "heldout", "dev")}
    assert not sets["train"] & sets["heldout"] and not sets["train"] & sets["dev"] and not sets["heldout"] & sets["dev"]
    assert len(sets["train"]) == 200  # no repeats


def test_word_problems_are_disjoint_by_their_arithmetic():
    stream = problems(5, seed=0)
    keys = [next(stream).key for _ in range(500)]
    assert len(set(keys)) == 500


def test_heldout_does_not_depend_on_the_training_size():
    small, large = math_tasks(50, seed=1), math_tasks(1500, seed=1)
    assert small["heldout"].to_list() == large["heldout"].to_list()
    assert small["dev"].to_list() == large["dev"].to_list()


def test_a_small_level_passes_its_share_on():
    room = level_capacity(1) - 30
    ds = math_tasks(5 * room + 100, levels=(1, 2, 3, 4, 5), heldout_per_level=20, dev_per_level=10)
    assert ds["train"]["level"].count(1) == room
    assert len(ds["train"]) == 5 * room + 100
    with pytest.raises(ValueError, match="hold only"):
        math_tasks(10_000, levels=(1,), heldout_per_level=20, dev_per_level=10)
    with pytest.raises(ValueError, match="unknown level 9"):
        math_tasks(10, levels=(9,))


@pytest.mark.parametrize(
    ("problem", "answer"),
    [
        ("What is 7 + 5?", "12"),
        ("What is 4 * 7 + 13?", "41"),
        ("What is 35 + 19 - 8?", "46"),
        ("What is 2 + 3 * 4?", "14"),
    ],
)
def test_reference_answer(problem, answer):
    assert reference_answer(problem) == answer


def test_answers_are_consistent_with_the_problems():
    ds = math_tasks(300, seed=0)["train"]
    checked = 0
    for prompt, answer in zip(texts(ds), ds["answer"], strict=True):
        import re

        bare = re.match(PROBLEM_PATTERN, prompt, re.S).group("problem")
        ref = reference_answer(bare)
        if ref is not None:
            assert ref == answer
            checked += 1
        assert int(answer) >= 0
    assert checked >= 200
    assert reference_answer("Mia has 3 apples.") is None


def test_math_verify_reward():
    completions = ["12", "The answer is 12.", "11", "", [{"role": "assistant", "content": "12"}]]
    assert math_verify_reward(completions, ["12"] * 5) == [1.0, 1.0, 0.0, 0.0, 1.0]
