"""On-policy query augmentation with asynchronous validation (issue 6): ``heapa.augment``.

CPU only and offline. Generation uses either a real tiny Qwen2 model (random init + a short supervised
warm-up, char-level tokenizer built here) through ``TransformersBackend``, or clearly labelled TEST
DOUBLES: ``ScriptedBackend`` (a scripted ``GenerationBackend``), ``EchoModel`` (a model whose
``generate`` returns the padded input plus scripted tokens) and a fake ``vllm`` module implementing
vLLM's documented ``LLM.generate`` / ``SamplingParams`` / ``RequestOutput`` surface. The OpenAI validator
talks real HTTP to a chat-completions server on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import json
import os
import random
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
from heapa import NO_PARENT, InvalidInputError, Pool, PoolConfig
from heapa.augment import (
    COMPACT_TEMPLATE,
    DEFAULT_TEMPLATE,
    AugmentationConfig,
    Augmenter,
    Candidate,
    CharsetFilter,
    Completion,
    DecontaminationFilter,
    DedupFilter,
    GenerationBackend,
    LengthFilter,
    OpenAIValidator,
    PromptBuilder,
    Sampling,
    SelfConsistencyValidator,
    TaggedFormat,
    TransformersBackend,
    ValidationPipeline,
    Verdict,
    VLLMBackend,
    answers_equivalent,
    extract_answer,
    majority_answer,
    parse_variant,
    truncate_at_stop,
)
from heapa.augment._records import GenerationCall
from heapa.augment._sft import arithmetic_variant, supervised_warmup

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

LOWER = TaggedFormat(new="new", difficulty="difficulty", end="end", original="original")


# ---------------------------------------------------------------------- helpers and test doubles


def char_tokenizer(chat_template: str | None = None):
    """One token per character (trl-vllm-notes §8), with '.' and upper case for the tagged format."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = "0123456789+-*/=?:.,()[]{}<>|_ \nabcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    vocab = {t: i for i, t in enumerate(("<pad>", "<eos>", "<unk>"))}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>", padding_side="left"
    )
    if chat_template:
        tok.chat_template = chat_template
    return tok


ROLE_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def tiny_model(tok, seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )
    return Qwen2ForCausalLM(cfg)


ALL_SUMS = [f"{a}+{b}=" for a in range(10) for b in range(10)]
SEEDS = [f"{a}+{b}=" for a in range(0, 10, 2) for b in range(0, 10, 2)]  # even operands: variants are new


@pytest.fixture(scope="module")
def warm_model():
    """A tiny model taught the compact variant format (about 4 s on one CPU thread)."""
    tok = char_tokenizer()
    model = tiny_model(tok)
    builder = PromptBuilder(tok, template=COMPACT_TEMPLATE, fmt=LOWER)
    rng = random.Random(0)
    examples = []
    for p in ALL_SUMS:
        new, d = arithmetic_variant(p, rng)
        examples.append(builder.example(p, new, d))
    losses = supervised_warmup(model, tok, examples, steps=200, batch_size=16, lr=1e-2)
    assert losses[-1] < losses[0] / 5
    return model, tok, builder


def solve_sum(prompt: Any) -> str:
    """A deterministic solver for ``a+b=`` prompts ("none" when the prompt is not of that form)."""
    text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
    try:
        a, b = text.strip().rstrip("=").split("+")
        return str(int(a) + int(b))
    except ValueError:
        return "none"


class ScriptedBackend:
    """TEST DOUBLE of a GenerationBackend: scripted responses instead of a model.

    Variant requests (compact format) get ``variant(problem, j)``; any other prompt is treated as a
    solve request of an ``a+b=`` child and gets ``solve(prompt, j)``.
    """

    collective = False

    def __init__(self, variant=None, solve=None, fmt: TaggedFormat = LOWER, delay: float = 0.0) -> None:
        self.fmt = fmt
        self.variant = variant or (lambda p, j: f"{_bump(p, j)}\n{fmt.difficulty}: 1.10\n{fmt.end}")
        self.solve = solve or (lambda p, j: solve_sum(p))
        self.delay = delay
        self.calls: list[tuple[list[str], Sampling, bool]] = []

    def generate(self, prompts, sampling, *, add_special_tokens=True):
        self.calls.append((list(prompts), sampling, add_special_tokens))
        time.sleep(self.delay)
        out = []
        tag = f"{self.fmt.original}:"
        for p in prompts:
            if p.startswith(tag):
                problem = p[len(tag) :].split("\n")[0]
                out.append([Completion(self.variant(problem, j), (), "stop") for j in range(sampling.n)])
            else:
                out.append([Completion(str(self.solve(p, j)), (), "stop") for j in range(sampling.n)])
        return out


def _bump(problem: str, j: int) -> str:
    a, b = problem.rstrip("=").split("+")
    return f"{int(a) + 1 + 2 * j}+{b}="  # odd first operand: never one of the (even) seeds


def make_pool(seeds=SEEDS, score: float | None = 0.5, **cfg) -> tuple[Pool, np.ndarray]:
    """A pool of ``a+b=`` seeds, all sampled and reported with ``score`` (so children get estimates)."""
    pool = Pool(PoolConfig(seed=0, **cfg))
    ids = pool.add(list(seeds), answers=[solve_sum(s) for s in seeds], metadata=[{"level": 1}] * len(seeds))
    if score is not None:
        got = pool.sample(len(ids))
        pool.report(got, rewards=np.full(len(got), score), n_rollouts=np.full(len(got), 4), step=0)
    return pool, ids


def make_aug(pool, backend=None, validators=None, **cfg) -> Augmenter:
    cfg.setdefault("template", COMPACT_TEMPLATE)
    cfg.setdefault("fmt", LOWER)
    cfg.setdefault("min_chars", 3)
    cfg.setdefault("seed", 0)
    config = AugmentationConfig(**cfg)
    if validators is None:
        validators = [SelfConsistencyValidator(k=3, threshold=0.6, solver=lambda p, k: [solve_sum(p)] * k)]
    aug = Augmenter(config, pool=pool, backend=backend or ScriptedBackend(), validators=validators)
    aug.start()
    return aug


def wait_for(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def held_total(m: dict[str, float]) -> float:
    return m["aug/queue_depth"]


def assert_accounting(aug: Augmenter) -> dict[str, float]:
    """Every proposed variant is accepted, rejected for one reason, or still held; accepted = inserted +
    waiting for inbox room."""
    m = aug.metrics()
    rejected = sum(v for k, v in m.items() if k.startswith("aug/rejected/"))
    assert m["aug/rejected"] == rejected
    assert m["aug/proposed"] == m["aug/accepted"] + rejected + held_total(m), m
    assert m["aug/accepted"] == m["aug/inserted"] + m["aug/pending_insert"], m
    return m


def children_of(pool: Pool, ids: np.ndarray) -> np.ndarray:
    all_ids = np.concatenate([pool.ids(s) for s in ("cold", "hard", "easy", "in_flight", "archived")])
    parent = pool.lineage(all_ids)["parent"]
    return all_ids[parent != np.uint64(NO_PARENT)]


# ---------------------------------------------------------------------- parsing


class TestParsing:
    def test_well_formed(self):
        r = parse_variant("NEW:\nWhat is 3+5?\nDIFFICULTY: 1.05\nEND")
        assert (r.ok, r.problem, r.difficulty) == (True, "What is 3+5?", 1.05)

    def test_cued_response_starts_with_the_problem(self):
        r = parse_variant("3+5=\ndifficulty: 0.9\nend", LOWER, cued=True)
        assert (r.problem, r.difficulty) == ("3+5=", 0.9)
        assert parse_variant("3+5=\ndifficulty: 0.9", LOWER).reason == "no_new"

    def test_clamped_both_ends(self):
        assert parse_variant("NEW: x+1=2, find x\nDIFFICULTY: 7").difficulty == 1.33
        assert parse_variant("NEW: x+1=2, find x\nDIFFICULTY: 0.1").difficulty == 0.75
        assert parse_variant("NEW: x+1=2, find x\nDIFFICULTY: 110%").difficulty == pytest.approx(1.1)

    def test_markdown_case_and_crlf(self):
        r = parse_variant("Sure!\r\n**New:** Find x if 2x = 8.\r\n### Difficulty: ~1.2x\r\n")
        assert (r.problem, r.difficulty) == ("Find x if 2x = 8.", 1.2)

    @pytest.mark.parametrize(
        ("text", "reason"),
        [
            ("no tags at all", "no_new"),
            ("NEW:\n\nDIFFICULTY: 1.0", "empty"),
            ("NEW: find x if x+1=3", "no_difficulty"),
            ("NEW: find x if x+1=3\nDIFFICULTY: hard", "bad_difficulty"),
            ("NEW: find x if x+1=3\nDIFFICULTY: -1", "bad_difficulty"),
        ],
    )
    def test_malformed(self, text, reason):
        assert parse_variant(text).reason == reason

    def test_missing_difficulty_can_default(self):
        r = parse_variant("NEW: find x if x+1=3", require_difficulty=False)
        assert (r.ok, r.difficulty) == (True, 1.0)

    def test_problem_stops_at_next_tag(self):
        r = parse_variant("NEW: p1\nORIGINAL: old\nNEW: p2\nDIFFICULTY: 1.1")
        assert r.problem == "p1" and r.difficulty == 1.1

    def test_b12_prompt_tail_is_never_parsed(self):
        """The reference decoded the tail of the left-padded prompt as output: its first NEW/DIFFICULTY
        tags came from the few-shot example. Parsing the response alone gets the model's own answer."""
        builder = PromptBuilder(None)
        prompt = builder.build("Compute 12 * 7.")
        response = "Compute 13 * 7.\nDIFFICULTY: 1.10\nEND"
        good = parse_variant(response, cued=builder.cued)
        assert (good.problem, good.difficulty) == ("Compute 13 * 7.", 1.1)
        # What the reference parsed for an item ``tail`` tokens shorter than the batch's longest prompt:
        example_new = prompt.index("NEW:\nIn isosceles")
        bad = parse_variant(prompt[example_new:] + response, cued=True)
        assert bad.problem.startswith("In isosceles triangle") and bad.difficulty == 1.03  # the few-shot example
        format_new = prompt.index("NEW:\n<the new problem>")
        bad = parse_variant(prompt[format_new:] + response, cued=True)
        assert bad.problem == "<the new problem>"  # the format placeholder

    def test_stops_come_after_the_difficulty_line_b5(self):
        stops = LOWER.stops()
        assert not any("difficulty" in s.lower() for s in stops)
        raw = "4+5=\ndifficulty: 1.07\nend\noriginal:9+9=\nnew:"
        text, hit = truncate_at_stop(raw, stops)
        assert hit and parse_variant(text, LOWER, cued=True).difficulty == 1.07
        assert TaggedFormat().stops()[0] == "\nEND"

    def test_braces_in_problems_are_safe(self):
        assert "{x}" in PromptBuilder(None).build("Let f(x) = {x} + 1. Find f(2).")


# ---------------------------------------------------------------------- prompt builder


class TestPromptBuilder:
    def test_without_chat_template_is_completion_style(self):
        b = PromptBuilder(char_tokenizer(), template=COMPACT_TEMPLATE, fmt=LOWER)
        assert not b.uses_chat_template and b.cued and b.add_special_tokens
        assert b.build("3+4=") == "original:3+4=\nnew:\n"
        assert b.example("3+4=", "3+5=", 1.01) == ("original:3+4=\nnew:\n", "3+5=\ndifficulty: 1.01\nend")

    def test_with_the_tokenizers_own_chat_template(self):
        tok = char_tokenizer(ROLE_TEMPLATE)
        b = PromptBuilder(tok, system_prompt="be brief")
        out = b.build("3+4=")
        assert out.startswith("<system>be brief</system><user>") and out.endswith("</user><assistant>")
        assert "ORIGINAL:\n3+4=" in out and not b.cued and not b.add_special_tokens
        assert b.example("3+4=", "3+5=", 1.0)[1].startswith("NEW:\n3+5=")
        assert PromptBuilder(tok, use_chat_template=False).build("1+1=").endswith("NEW:\n")
        with pytest.raises(ValueError, match="chat_template"):
            PromptBuilder(char_tokenizer(), use_chat_template=True)

    def test_default_template_has_format_and_example(self):
        b = PromptBuilder(None)
        text = b.build("What is 2+2?")
        assert text.endswith("ORIGINAL:\nWhat is 2+2?\nNEW:\n")
        assert "DIFFICULTY: 1.03" in text and "{" not in DEFAULT_TEMPLATE.replace("{problem}", "").replace(
            "{new}", ""
        ).replace("{difficulty}", "").replace("{end}", "").replace("{original}", "")

    def test_children_keep_the_parents_wrapper(self):
        wrapper = "Solve step by step.\n\nPROBLEM: {}\n\nPut the answer after 'Answer:'."
        b = PromptBuilder(None, problem_pattern=r"PROBLEM: (?P<problem>.*?)\n\n")
        parent = wrapper.format("What is 2+3?")
        assert b.problem_of(parent) == "What is 2+3?"
        assert b.make_child(parent, "What is 2+4?") == wrapper.format("What is 2+4?")
        chat = [{"role": "system", "content": "sys"}, {"role": "user", "content": parent}]
        child = b.make_child(chat, "What is 9+4?")
        assert child[1]["content"] == wrapper.format("What is 9+4?") and chat[1]["content"] == parent
        assert child[0] == chat[0]

    def test_render_matches_training_prompts(self):
        tok = char_tokenizer(ROLE_TEMPLATE)
        b = PromptBuilder(tok)
        assert b.render("3+4=") == ("3+4=", True)
        assert b.render([{"role": "user", "content": "3+4="}]) == ("<user>3+4=</user><assistant>", False)


# ---------------------------------------------------------------------- backends


class EchoModel(torch.nn.Module):
    """TEST DOUBLE of a causal LM: ``generate`` returns the (left-padded) input followed by scripted
    response tokens, like HF ``generate``, so the backend's slicing can be checked exactly."""

    def __init__(self, responses: list[list[int]]) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.responses = responses
        self.seen = []

    def generate(self, input_ids, attention_mask, generation_config, stopping_criteria):
        self.seen.append((input_ids.clone(), attention_mask.clone(), generation_config))
        n = generation_config.num_return_sequences
        rows = input_ids.repeat_interleave(n, dim=0)
        width = max(len(r) for r in self.responses)
        pad = generation_config.pad_token_id
        resp = [r + [pad] * (width - len(r)) for r in self.responses[: rows.shape[0]]]
        return torch.cat([rows, torch.tensor(resp)], dim=1)


class TestTransformersBackend:
    def test_response_tokens_only_with_left_padding(self):
        """Prompts of very different lengths in one batch: every completion is exactly its response."""
        tok = char_tokenizer()
        prompts = ["original:1+1=\nnew:\n", "original:" + "9" * 40 + "+1=\nnew:\n", "o:2=\nnew:\n"]
        texts = ["2+1=\ndifficulty: 1.01\nend", "8+1=\ndifficulty: 0.99", "3=\ndifficulty: 1.2"]
        responses = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
        model = EchoModel(responses)
        be = TransformersBackend(model, tok)
        out = be.generate(prompts, Sampling(n=1, max_new_tokens=50, stop=LOWER.stops()))
        assert [r[0].text for r in out] == ["2+1=\ndifficulty: 1.01", texts[1], texts[2]]
        assert [r[0].finish_reason for r in out] == ["stop", "stop", "stop"]
        ids, mask, cfg = model.seen[0]
        assert ids.shape[0] == 3 and (mask[:, 0] == 0).any()  # left padded
        assert cfg.max_new_tokens == 50 and cfg.do_sample

    def test_generates_with_a_real_tiny_model(self, warm_model):
        """Contracts that hold whatever the sampled text is (slicing is checked exactly with EchoModel)."""
        model, tok, builder = warm_model
        be = TransformersBackend(model, tok, batch_size=8)
        prompts = [builder.build(p) for p in SEEDS[:10]]
        sampling = Sampling(n=2, max_new_tokens=32, temperature=1.0, stop=LOWER.stops(), seed=3)
        out = be.generate(prompts, sampling)
        assert len(out) == 10 and all(len(r) == 2 for r in out)
        assert out == be.generate(prompts, sampling)  # seeded: reproducible, training RNG untouched
        comps = [c for r in out for c in r]
        assert all(len(c.token_ids) <= sampling.max_new_tokens for c in comps)  # response tokens only
        assert not any(s in c.text for c in comps for s in LOWER.stops())  # cut before any stop string
        assert all(c.finish_reason in ("stop", "length") for c in comps)
        assert model.training  # left as TRL leaves it


# A fake ``vllm`` module implementing the documented API (vllm/entrypoints/llm.py, sampling_params.py,
# outputs.py of vLLM 0.33.0). vLLM itself cannot run on CPU machines.


@dataclass
class FakeSamplingParams:
    """TEST DOUBLE of vllm.SamplingParams (documented fields only; unknown keywords raise)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: list[str] | None = None
    stop_token_ids: list[int] | None = None
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True


@dataclass
class FakeCompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None


@dataclass
class FakeRequestOutput:
    prompt_token_ids: list[int]
    outputs: list[FakeCompletionOutput] = field(default_factory=list)


class FakeLLM:
    """TEST DOUBLE of vllm.LLM: ``generate(prompts, sampling_params, *, use_tqdm)`` with vLLM's stop and
    max_tokens semantics over a scripted (char-level) continuation."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.calls: list[tuple[list[Any], FakeSamplingParams]] = []

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None, priority=None):
        sp = sampling_params or FakeSamplingParams()
        self.calls.append((list(prompts), sp))
        outs = []
        for p in prompts:
            ids = p["prompt_token_ids"] if isinstance(p, dict) else [ord(c) for c in p]
            comps = []
            for i in range(sp.n):
                text = self.script[: sp.max_tokens]
                finish = "length"
                for s in sp.stop or []:
                    j = text.find(s)
                    if j >= 0:
                        text = text[: j + (len(s) if sp.include_stop_str_in_output else 0)]
                        finish = "stop"
                comps.append(FakeCompletionOutput(i, text, [ord(c) for c in text], finish))
            outs.append(FakeRequestOutput(list(ids), comps))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    mod = types.ModuleType("vllm")
    mod.SamplingParams = FakeSamplingParams
    mod.LLM = lambda model, **kw: FakeLLM("x")
    monkeypatch.setitem(sys.modules, "vllm", mod)
    return mod


class TestVLLMBackend:
    SCRIPT = "7+5=\nDIFFICULTY: 1.07\nEND\nORIGINAL: more text the model rambles on with"

    def test_colocate_llm_contract(self, fake_vllm):
        tok = char_tokenizer()
        llm = FakeLLM(self.SCRIPT)
        be = VLLMBackend(llm, tokenizer=tok)
        cfg = AugmentationConfig(variants_per_parent=3, seed=5)
        out = be.generate(["ORIGINAL:\n6+5=\nNEW:\n"] * 2, cfg.sampling(step=2))
        prompts, sp = llm.calls[0]
        assert sp.max_tokens == 400 and sp.n == 3 and sp.seed == 7  # its own params, not vLLM's default 16 (B5)
        assert sp.stop == ["\nEND", "\nORIGINAL:", "\\boxed", "Solution:"]
        assert not sp.include_stop_str_in_output and sp.skip_special_tokens
        assert prompts[0] == {"prompt_token_ids": tok("ORIGINAL:\n6+5=\nNEW:\n")["input_ids"]}
        assert len(out) == 2 and all(len(r) == 3 for r in out)
        r = parse_variant(out[0][0].text, cued=True)
        assert (r.problem, r.difficulty) == ("7+5=", 1.07)  # the stop did not cut the number
        assert out[0][0].finish_reason == "stop"

    def test_standalone_is_lazy(self, fake_vllm):
        be = VLLMBackend.standalone("some/local/path", gpu_memory_utilization=0.5)
        assert isinstance(be.llm, FakeLLM) and isinstance(be, GenerationBackend)

    def test_from_trainer_modes(self, fake_vllm):
        tok = char_tokenizer()
        acc = types.SimpleNamespace(num_processes=2, process_index=0, is_main_process=True)
        llm = FakeLLM(self.SCRIPT)
        vg = types.SimpleNamespace(mode="colocate", llm=llm, tensor_parallel_size=2, enable_sleep_mode=False)
        trainer = types.SimpleNamespace(
            args=types.SimpleNamespace(use_vllm=True, vllm_mode="colocate"),
            vllm_generation=vg,
            processing_class=tok,
            accelerator=acc,
        )
        be = VLLMBackend.from_trainer(trainer)
        assert be.llm is llm and be.collective and be.group_size == 2
        vg.enable_sleep_mode = True
        with pytest.raises(NotImplementedError, match="sleep"):
            VLLMBackend.from_trainer(trainer)
        trainer.args.use_vllm = False
        with pytest.raises(ValueError, match="use_vllm"):
            VLLMBackend.from_trainer(trainer)

    def test_server_client_contract(self):
        """Server mode: TRL's VLLMClient.generate (prompt-major completion ids), decoded here."""
        tok = char_tokenizer()

        class FakeClient:
            """TEST DOUBLE of trl.generation.vllm_client.VLLMClient.generate."""

            def __init__(self):
                self.kwargs = None

            def generate(self, prompts, features=None, n=1, repetition_penalty=1.0, temperature=1.0, top_p=1.0,
                         top_k=0, min_p=0.0, max_tokens=16, logprobs=0, structured_outputs_regex=None,
                         generation_kwargs=None):  # fmt: skip
                self.kwargs = dict(prompts=prompts, n=n, max_tokens=max_tokens, generation_kwargs=generation_kwargs)
                texts = [f"{i}+{j}=\nDIFFICULTY: 1.0{j}\nEND" for i in range(len(prompts)) for j in range(n)]
                ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
                return {"prompt_ids": prompts, "completion_ids": ids, "logprobs": None, "logprob_token_ids": None}

        client = FakeClient()
        vg = types.SimpleNamespace(mode="server", vllm_client=client, enable_sleep_mode=False)
        trainer = types.SimpleNamespace(
            args=types.SimpleNamespace(use_vllm=True, vllm_mode="server"),
            vllm_generation=vg,
            processing_class=tok,
            accelerator=types.SimpleNamespace(num_processes=2, process_index=0, is_main_process=True),
        )
        be = VLLMBackend.from_trainer(trainer)
        assert be.client is client and not be.collective
        out = be.generate(["a", "b"], Sampling(n=2, max_new_tokens=400, stop=TaggedFormat().stops(), seed=1))
        assert client.kwargs["max_tokens"] == 400 and client.kwargs["n"] == 2
        assert client.kwargs["generation_kwargs"]["stop"][0] == "\nEND"
        assert client.kwargs["generation_kwargs"]["seed"] == 1
        assert [[c.text for c in r] for r in out] == [
            ["0+0=\nDIFFICULTY: 1.00", "0+1=\nDIFFICULTY: 1.01"],
            ["1+0=\nDIFFICULTY: 1.00", "1+1=\nDIFFICULTY: 1.01"],
        ]
        trainer.accelerator.is_main_process = False  # other ranks have no client and do not generate
        assert VLLMBackend.from_trainer(trainer).client is None


def test_collective_generation_shards_evenly():
    """ZeRO-3 / colocated engines: every rank generates an equal-size shard; TP groups share one."""

    class Recorder:
        collective = True
        group_size = 2

        def __init__(self):
            self.seen = []

        def generate(self, prompts, sampling, *, add_special_tokens=True):
            self.seen.append(list(prompts))
            return [[Completion(p)] for p in prompts]

    texts = [f"p{i}" for i in range(5)]
    parts: dict[int, Any] = {}
    result = None
    for rank in (1, 2, 3, 0):  # simulated ranks; rank 0 (main) gathers last
        be = Recorder()
        aug = Augmenter(AugmentationConfig(), backend=be, validators=[])

        def gather(obj, rank=rank):
            parts[rank] = obj
            return [parts[r] for r in range(4)] if rank == 0 else [None] * 4

        dist = types.SimpleNamespace(world=4, rank=rank, is_main=rank == 0, gather=gather)
        out = aug._generate(dist, GenerationCall("variants", tuple(texts), Sampling(), True), collective=True)
        assert len(be.seen[0]) == 3  # ceil(5 / 2 shards), the short shard padded: equal work per rank
        if rank == 0:
            result = out
        else:
            assert out is None
    assert parts[1] is None and parts[3] is None  # one copy per tensor-parallel group
    assert [row[0].text for row in result] == texts


# ---------------------------------------------------------------------- answers and self-consistency


class TestSelfConsistency:
    def test_extract_answer(self):
        assert extract_answer("so \\boxed{\\frac{3}{4}} is it") == "\\frac{3}{4}"
        assert extract_answer("work...\nAnswer: 1,250.") == "1250"
        assert extract_answer("12") == "12" and extract_answer("no digits") is None

    def test_equivalence_fast_paths_and_math_verify(self):
        assert answers_equivalent("12", " 12. ")
        assert answers_equivalent("1/2", "0.5") and not answers_equivalent("1/2", "0.6")
        assert answers_equivalent("\\frac{1}{2}", "0.5")  # math-verify
        assert not answers_equivalent("\\sqrt{4}", "3")

    def test_majority(self):
        assert majority_answer(["0.5", "1/2", "\\frac{1}{2}", "3", None]) == ("0.5", 3)
        assert majority_answer([None, None]) == (None, 0)

    def test_numbers_compared_exactly(self):
        """Ground truth is decided by value, exactly: floats would merge neighbouring big integers."""
        assert not answers_equivalent("12345678901234567890", "12345678901234567891")
        assert not answers_equivalent("9" * 400, "9" * 399 + "8")  # both inf as floats
        assert answers_equivalent("9" * 400, "9" * 400 + ".0")
        assert not answers_equivalent("3" * 400 + "/1", "7")  # no OverflowError
        assert answers_equivalent("3/4", "0.75") and answers_equivalent("1e3", "1000")
        votes = ["10000000000000001", "10000000000000000", "10000000000000000"]
        assert majority_answer(votes) == ("10000000000000000", 2)

    def test_solver_function(self):
        answers = {"a": ["7", "7", "7", "8"], "b": ["1", "2", "3", "4"], "c": ["5", None, None, None]}
        v = SelfConsistencyValidator(k=4, threshold=0.5, solver=lambda p, k: answers[p][:k])
        ok = v.validate(Candidate(1, "p", "a", 1.0, child_prompt="a"))
        assert (ok.accepted, ok.answer, ok.info["agreement"]) == (True, "7", 0.75)
        assert v.validate(Candidate(1, "p", "b", 1.0, child_prompt="b")).reason == "no_majority"
        assert v.validate(Candidate(1, "p", "c", 1.0, child_prompt="c")).reason == "no_majority"
        v2 = SelfConsistencyValidator(k=4, solver=lambda p, k: ["no number here"] * k)
        assert v2.validate(Candidate(1, "p", "a", 1.0)).reason == "no_answers"
        assert not v.needs_policy and SelfConsistencyValidator().needs_policy


# ---------------------------------------------------------------------- filters


class TestFilters:
    def test_dedup_is_normalised_and_reserving(self):
        d = DedupFilter(["What is 2 + 3?"])
        assert d.validate(Candidate(0, "", "what is 2+3", 1.0)).reason == "duplicate"
        v = d.validate(Candidate(0, "", "What is 2+4?", 1.0))
        assert v.accepted and d.validate(Candidate(0, "", "WHAT IS 2+4?", 1.0)).reason == "duplicate"
        d.settle(v.info["dedup_key"], accepted=False)
        assert d.seen("what is 2+4")  # recently rejected: not validated again

    def test_length_charset_decontamination(self):
        c = lambda s: Candidate(0, "", s, 1.0)  # noqa: E731
        assert LengthFilter(5, 20).validate(c("1+1")).reason == "too_short"
        assert LengthFilter(5, 20).validate(c("x" * 21)).reason == "too_long"
        assert CharsetFilter().validate(c("计算 2+3")).reason == "charset"
        assert CharsetFilter().validate(c("\uff57\uff48\uff41\uff54 is 2+3")).reason == "charset"  # full-width
        assert CharsetFilter().validate(c("a\x07b")).reason == "charset"
        assert CharsetFilter(allowed=r"[ -~]").validate(c("café")).reason == "charset"
        assert CharsetFilter().validate(c("Find x: 2x = 5 + π")).accepted
        eval_set = ["Let ABC be a triangle with AB = 13, BC = 14 and CA = 15. Find its area."]
        dec = DecontaminationFilter(eval_set, n=6)
        assert dec.validate(c("Now: a triangle with AB = 13, BC = 14 and CA = 16 exists.")).reason == "contaminated"
        assert dec.validate(c("A square has side 4. Find its area.")).accepted
        assert DecontaminationFilter(["What is 2+3?"], n=8).validate(c("what is 2 + 3?")).reason == "contaminated"


# ---------------------------------------------------------------------- pipeline and augmenter


class TestAugmenterEndToEnd:
    def test_children_with_lineage_and_estimates(self):
        pool, ids = make_pool()
        aug = make_aug(pool, variants_per_parent=2)
        try:
            aug.after_step(None, ids[:5], np.full(5, 0.5), step=1)
            assert aug.pipeline.wait_idle(10)
            m = assert_accounting(aug)
            assert m["aug/proposed"] == 10 and m["aug/parsed"] == 10
            assert m["aug/accepted"] == 10 and m["aug/inserted"] == 10
            new = pool.drain_inbox(step=2)
            assert len(new) == 10
            lin = pool.lineage(new)
            assert sorted(lin["parent"].tolist()) == sorted(np.repeat(ids[:5], 2).tolist())
            assert (lin["depth"] == 1).all()
            rec = pool.records(new)
            assert rec["estimated"].all() and np.allclose(rec["difficulty"], 1.10)
            # parent score 0.5 on (0, 1) is 0 in [-1, 1]: s/d = 0 -> 0.5
            assert np.allclose(rec["score"], 0.5)
            prompts, answers = pool.prompts(new), pool.answers(new)
            assert all(solve_sum(p) == a for p, a in zip(prompts, answers, strict=True))
            assert pool.metadata(new) == [{"level": 1}] * 10  # inherited
        finally:
            aug.close()

    def test_estimates_follow_parent_scores(self):
        pool, ids = make_pool(score=0.9)
        aug = make_aug(pool)
        try:
            aug.after_step(None, ids[:3], np.full(3, 0.9), step=1)
            assert aug.pipeline.wait_idle(10)
            new = pool.drain_inbox(step=1)
            s = 2 * 0.9 - 1
            assert np.allclose(pool.records(new)["score"], (s / 1.10 + 1) / 2)
        finally:
            aug.close()

    def test_tiny_model_end_to_end(self, warm_model):
        """The real path: the warmed tiny model writes variants through TransformersBackend, they are
        parsed, filtered, validated on threads and inserted with lineage and estimates. The assertions hold
        whatever text the model wrote (zero parsable variants included); test_children_with_lineage_and_estimates
        proves with scripted text that children enter."""
        model, tok, builder = warm_model
        pool, ids = make_pool()
        backend = TransformersBackend(model, tok, batch_size=16)
        aug = make_aug(pool, backend=backend, variants_per_parent=2, max_new_tokens=32)
        aug.builder = builder
        try:
            aug.after_step(None, ids, np.full(len(ids), 0.5), step=1)
            assert aug.pipeline.wait_idle(10)
            m = assert_accounting(aug)
            assert m["aug/proposed"] == 2 * len(ids)  # the backend answered every request
            # the next step's after_step drains the inbox and tracks the children's estimates
            aug.after_step(None, ids[:0], np.zeros(0), step=2)
            kids = children_of(pool, ids)
            assert len(kids) == m["aug/accepted"]
            rec = pool.records(kids)
            assert rec["estimated"].all() and set(pool.lineage(kids)["parent"].tolist()) <= set(ids.tolist())
            assert all(solve_sum(p) == a for p, a in zip(pool.prompts(kids), pool.answers(kids), strict=True))
            assert not set(pool.prompts(kids)) & set(SEEDS)  # no duplicates of the pool
            assert aug.metrics()["aug/drained"] == len(kids)
        finally:
            aug.close()

    def test_policy_solves_at_the_next_step(self):
        """SelfConsistencyValidator without a solver: the policy's k solutions are generated on the main
        process at the next step boundary, then judged on a thread."""
        pool, ids = make_pool()
        be = ScriptedBackend(solve=lambda p, j: solve_sum(p) if j < 3 else "0")  # 3 of 4 agree
        aug = make_aug(pool, backend=be, validators=[SelfConsistencyValidator(k=4, threshold=0.75)])
        try:
            aug.after_step(None, ids[:3], np.full(3, 0.5), step=1)
            assert aug.pipeline.wait_idle(5)
            assert aug.metrics()["aug/parked"] == 3 and aug.metrics()["aug/accepted"] == 0
            aug.after_step(None, ids[:0], np.zeros(0), step=2)
            solve_calls = [c for c in be.calls if c[1].n == 4]
            assert len(solve_calls) == 1 and solve_calls[0][0] == ["1+0=", "1+2=", "1+4="]
            assert aug.pipeline.wait_idle(5)
            m = assert_accounting(aug)
            assert m["aug/accepted"] == 3 and m["aug/solved"] == 3
            new = pool.drain_inbox()
            assert sorted(pool.answers(new)) == ["1", "3", "5"]
        finally:
            aug.close()

    def test_controls(self):
        pool, ids = make_pool()
        aug = make_aug(pool, parents="band", pass_rate_band=(0.2, 0.8), variants_per_parent=2, max_per_step=4)
        try:
            rates = np.array([0.0, 0.5, 1.0, 0.3, np.nan, 0.7, 0.6])
            aug.after_step(None, ids[:7], rates, step=1)
            m = aug.metrics()
            assert m["aug/requested"] == 4 and m["aug/skipped/cap"] == 4  # 4 in band x 2, cap 4
            aug.after_step(None, ids[:2], np.array([0.0, 1.0]), step=2)
            assert aug.metrics()["aug/skipped/no_parents"] == 1
        finally:
            aug.close()
        full, fids = make_pool(capacity=len(SEEDS))
        aug = make_aug(full)
        try:
            aug.after_step(None, fids[:3], np.full(3, 0.5), step=1)
            assert aug.metrics()["aug/skipped/capacity"] == 3 and aug.metrics()["aug/proposed"] == 0
        finally:
            aug.close()

    def test_max_depth_and_every_n_steps(self):
        pool, ids = make_pool()
        aug = make_aug(pool, max_depth=1, every_n_steps=2)
        try:
            aug.after_step(None, ids[:2], np.full(2, 0.5), step=1)
            assert aug.metrics()["aug/requested"] == 0
            aug.after_step(None, ids[:2], np.full(2, 0.5), step=2)
            assert aug.pipeline.wait_idle(5)
            kids = pool.drain_inbox()
            aug.after_step(None, kids, np.full(len(kids), 0.5), step=4)  # depth 1: no grandchildren
            assert aug.metrics()["aug/requested"] == 2
        finally:
            aug.close()

    def test_filters_run_before_queueing(self):
        pool, ids = make_pool()
        dup = SEEDS[1]  # "0+2=" is in the pool
        variants = iter([dup, "1+0=", "1+0=", "计算=", "x", "1+2="])
        be = ScriptedBackend(variant=lambda p, j: f"{next(variants)}\ndifficulty: 1.0\nend")
        aug = make_aug(pool, backend=be, variants_per_parent=6, decontaminate=["1+2=3"], decontamination_ngram=2)
        try:
            aug.after_step(None, ids[:1], np.array([0.5]), step=1)
            assert aug.pipeline.wait_idle(5)
            m = assert_accounting(aug)
            assert m["aug/rejected/duplicate"] == 2 and m["aug/rejected/charset"] == 1
            assert m["aug/rejected/too_short"] == 1 and m["aug/rejected/contaminated"] == 1
            assert m["aug/accepted"] == 1
        finally:
            aug.close()

    def test_malformed_counted_and_dropped(self):
        pool, ids = make_pool()
        outs = iter(["garbage", "5+5=\ndifficulty: zzz", "new:\n\ndifficulty: 1", "6+0=\ndifficulty: 1.2"])
        be = ScriptedBackend(variant=lambda p, j: next(outs))
        aug = make_aug(pool, backend=be, variants_per_parent=4)
        try:
            aug.after_step(None, ids[:1], np.array([0.5]), step=1)
            assert aug.pipeline.wait_idle(5)
            m = assert_accounting(aug)
            assert m["aug/rejected/malformed"] == 3 and m["aug/parsed"] == 1
            assert m["aug/malformed/bad_difficulty"] == 1 and m["aug/malformed/empty"] == 1
        finally:
            aug.close()

    def test_back_pressure_and_inbox_retry(self):
        pool, ids = make_pool(inbox_capacity=3)
        gate = threading.Event()

        class Gate:
            name = "gate"

            def validate(self, c):
                gate.wait(10)
                return Verdict.accept(answer=solve_sum(c.problem))

        aug = make_aug(pool, validators=[Gate()], max_queue=4, workers=2, variants_per_parent=1)
        try:
            aug.after_step(None, ids[:6], np.full(6, 0.5), step=1)
            m = aug.metrics()
            assert m["aug/requested"] == 4 and m["aug/skipped/backpressure"] == 2 and m["aug/queue_depth"] == 4
            aug.after_step(None, ids[6:8], np.full(2, 0.5), step=2)  # queue full: nothing requested
            assert aug.metrics()["aug/requested"] == 4
            gate.set()
            assert aug.pipeline.wait_idle(5)
            m = assert_accounting(aug)
            assert m["aug/accepted"] == 4 and m["aug/inserted"] == 3 and m["aug/pending_insert"] == 1
            assert len(pool.drain_inbox()) == 3
            aug.pipeline.flush()
            assert len(pool.drain_inbox()) == 1 and aug.metrics()["aug/inserted"] == 4
        finally:
            gate.set()
            aug.close()

    def test_after_round_and_metrics_estimate_error(self):
        pool, ids = make_pool()
        aug = make_aug(pool)
        try:
            rnd = types.SimpleNamespace(
                step=1,
                ids=ids[:2],
                rows=[{"prompt": p} for p in pool.prompts(ids[:2])],
                rewards=np.full(2, 0.5),
                n_rollouts=np.array([4, 4]),
                n_correct=np.array([2, 2]),
            )
            aug.after_round(None, rnd)
            assert aug.pipeline.wait_idle(5)
            assert aug.metrics()["aug/acceptance_rate"] == 1.0
            aug.after_step(None, ids[:0], np.zeros(0), step=2)  # drains: estimates recorded
            kids = children_of(pool, ids)
            got = pool.sample(len(pool))
            assert set(kids.tolist()) <= set(got.tolist())
            pool.report(got, rewards=np.full(len(got), 0.8), step=3)
            aug.after_step(None, got, np.full(len(got), 0.8), step=3, scores=np.full(len(got), 0.8))
            m = aug.metrics()
            assert m["aug/est_pairs"] == 2 and m["aug/est_error_mean"] == pytest.approx(0.3)
            assert m["aug/batch_share"] == pytest.approx(2 / len(got))
            assert "aug/latency_mean_s" in m and m["aug/rejected/duplicate"] > 0
        finally:
            aug.close()

    def test_chat_prompts_roundtrip_through_the_pool(self):
        tok = char_tokenizer(ROLE_TEMPLATE)
        pool = Pool(PoolConfig(seed=0))
        prompts = [[{"role": "user", "content": s}] for s in SEEDS[:3]]
        ids = pool.add([json.dumps(p) for p in prompts], answers=["0"] * 3)
        got = pool.sample(3)
        pool.report(got, rewards=np.full(3, 0.5), step=0)
        cfg = AugmentationConfig(min_chars=3, seed=0, fmt=LOWER, template=COMPACT_TEMPLATE, use_chat_template=False)
        be = ScriptedBackend()
        aug = Augmenter(
            cfg,
            pool=pool,
            backend=be,
            tokenizer=tok,
            validators=[SelfConsistencyValidator(k=2, solver=lambda p, k: [solve_sum(p)] * k)],
            encode=json.dumps,
            decode=json.loads,
        )
        aug.start()
        try:
            aug.after_step(None, ids, np.full(3, 0.5), step=1)
            assert aug.pipeline.wait_idle(5)
            new = pool.drain_inbox()
            kids = sorted((json.loads(t) for t in pool.prompts(new)), key=lambda m: m[0]["content"])
            assert kids == [[{"role": "user", "content": f"1+{b}="}] for b in (0, 2, 4)]
        finally:
            aug.close()


# ---------------------------------------------------------------------- OpenAI-compatible validator over HTTP


RAW_ANSWERS = {  # ChatServer: the answer for these words, as raw JSON
    "numeric": "42",
    "million": "1234567",
    "hugeint": "9" * 400,
    "decimal": "2.50",
    "exponent": "1.5e-7",
    "boolean": "true",
    "surrogate": '"\\ud800"',  # valid JSON, but a lone surrogate no pool can store
}


class ChatServer:
    """A real HTTP server on 127.0.0.1 speaking the chat-completions protocol, with scripted faults keyed
    by a word in the problem: ok, flaky500, always500, badjson, envelope, slow, unsolvable, noanswer,
    notfound, and the words of ``RAW_ANSWERS`` (the answer written as that raw JSON). Counts requests per
    problem."""

    def __init__(self, delay: float = 0.0) -> None:
        self.hits: dict[str, int] = {}
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.delay = delay
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                user = body["messages"][-1]["content"]
                problem = user.split("GENERATION (a new problem written by another model):\n")[1].split("\n")[0]
                word = problem.split()[0]
                with server.lock:
                    n = server.hits[problem] = server.hits.get(problem, 0) + 1
                    server.bodies.append(body)
                    server.headers.append(dict(self.headers))
                if server.delay:
                    time.sleep(server.delay)
                answer: Any = str(len(problem))
                obj = {"problem": problem.upper(), "solvable": True, "answer": answer, "difficulty": 1.2}
                status, raw = 200, None
                if (word == "flaky500" and n == 1) or word == "always500":
                    status = 500
                elif word == "notfound":
                    status = 404
                elif word == "badjson":
                    raw = "this is not json"
                elif word == "envelope" and n == 1:
                    self._send(200, b"{not an envelope")
                    return
                elif word == "slow" and n == 1:
                    time.sleep(0.6)
                elif word == "unsolvable":
                    obj["solvable"] = False
                elif word == "noanswer":
                    obj["answer"] = None
                if word in RAW_ANSWERS:  # the answer exactly as written, not as json.dumps would
                    written = '"answer": ' + RAW_ANSWERS[word]
                    raw = json.dumps(obj).replace('"answer": ' + json.dumps(answer), written)
                content = raw if raw is not None else "```json\n" + json.dumps(obj) + "\n```"
                env = {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {
                    "role": "assistant", "content": content}, "finish_reason": "stop"}]}  # fmt: skip
                self._send(status, json.dumps(env).encode())

            def _send(self, status, data):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def chat_server():
    s = ChatServer()
    yield s
    s.close()


def openai(url, **kw):
    kw.setdefault("timeout", 0.3)
    kw.setdefault("max_retries", 2)
    kw.setdefault("backoff", 0.01)
    kw.setdefault("backoff_max", 0.05)
    return OpenAIValidator(url, "teacher", **kw)


class TestOpenAIValidator:
    def test_correct_result(self, chat_server):
        v = openai(chat_server.url, api_key="sk-test", extra_body={"reasoning_effort": "low"})
        verdict = v.validate(Candidate(1, "p", "ok what is 2+2", 1.0, parent_problem="what is 1+1"))
        assert verdict.accepted and verdict.problem == "OK WHAT IS 2+2" and verdict.answer == "14"
        assert verdict.info["teacher_difficulty"] == 1.2 and verdict.difficulty is None
        body = chat_server.bodies[0]
        assert body["model"] == "teacher" and body["response_format"] == {"type": "json_object"}
        assert body["reasoning_effort"] == "low" and "what is 1+1" in body["messages"][1]["content"]
        assert chat_server.headers[0]["Authorization"] == "Bearer sk-test"
        num = v.validate(Candidate(1, "p", "numeric one", 1.0))
        assert num.answer == "42"
        assert (
            openai(chat_server.url, use_teacher_difficulty=True).validate(Candidate(1, "p", "ok a", 1.0)).difficulty
            == 1.2
        )

    def test_numeric_answers_are_exact(self, chat_server):
        """A JSON number becomes the ground truth digit for digit: no float formatting, no overflow; a
        boolean is no answer."""
        v = openai(chat_server.url)
        words = ("numeric", "million", "hugeint", "decimal", "exponent", "boolean")
        got = {w: v.validate(Candidate(1, "p", f"{w} problem", 1.0)) for w in words}
        assert got["numeric"].answer == "42" and got["million"].answer == "1234567"
        assert got["hugeint"].answer == "9" * 400 and got["decimal"].answer == "2.50"
        assert got["exponent"].answer == "0.00000015"
        assert (got["boolean"].accepted, got["boolean"].reason) == (False, "no_answer")

    def test_failures_nothing_lost_or_duplicated(self, chat_server):
        """Faults through the whole pipeline: every candidate ends accepted once or rejected once."""
        pool = Pool(PoolConfig(seed=0))
        parent = pool.add(["root problem"], answers=["1"])
        got = pool.sample(1)
        pool.report(got, rewards=[0.5], step=0)
        v = openai(chat_server.url)
        words = ["ok", "flaky500", "always500", "badjson", "envelope", "slow", "unsolvable", "noanswer", "notfound"]
        commit_calls = []

        def commit(cands):
            commit_calls.append([c.uid for c in cands])
            return pool.inbox.push(
                [c.problem for c in cands],
                answers=[c.answer for c in cands],
                parents=[c.parent_id for c in cands],
                difficulty=[c.difficulty for c in cands],
            )

        pipe = ValidationPipeline([v], commit, workers=3, max_requeues=1)
        pipe.start()
        try:
            cands = [Candidate(int(parent[0]), "root problem", f"{w} problem {i}", 1.1) for i, w in enumerate(words)]
            assert pipe.submit(cands) == len(words)
            assert pipe.wait_idle(15)
        finally:
            pipe.close()
        c = pipe.counts
        assert c["accepted"] == 4 and c["inserted"] == 4  # ok, flaky500, envelope, slow
        assert c["rejected/openai_error"] == 3 and c["rejected/unsolvable"] == 1 and c["rejected/no_answer"] == 1
        assert c["enqueued"] == c["accepted"] + sum(n for k, n in c.items() if k.startswith("rejected/"))
        assert c["requeued"] == 2  # always500 and badjson got a second round; notfound is not retried
        assert chat_server.hits["always500 problem 2"] == 2 * 3 and chat_server.hits["notfound problem 8"] == 1
        new = pool.drain_inbox()
        assert sorted(pool.prompts(new)) == sorted(
            ["OK PROBLEM 0", "FLAKY500 PROBLEM 1", "ENVELOPE PROBLEM 4", "SLOW PROBLEM 5"]
        )
        assert (pool.lineage(new)["parent"] == parent[0]).all()
        assert len({u for call in commit_calls for u in call}) == 4
        assert v.stats["error/timeout"] >= 1 and v.stats["error/http_500"] >= 7 and v.stats["error/malformed"] >= 5

    def test_trainer_keeps_going_shutdown_and_resume(self, tmp_path):
        """Slow validation never blocks after_step; shutdown with requests in flight aborts them and keeps
        them in the state, unjudged; a resumed augmenter validates them and inserts each exactly once."""
        slow = ChatServer(delay=60.0)  # answers long after the test: any verdict would come from shutdown
        pool, ids = make_pool()
        aug = make_aug(pool, validators=[openai(slow.url, timeout=120.0, max_retries=0)], workers=2)
        try:
            aug.after_step(None, ids[:4], np.full(4, 0.5), step=1)  # returns with validation still behind it
            assert wait_for(lambda: aug.metrics()["aug/in_flight"] == 2)
            workers = list(aug.pipeline._threads)
            aug.close(timeout=10)  # shutdown with two requests in flight
            assert not any(t.is_alive() for t in workers)
            with aug.paused():
                pool.save(tmp_path / "pool.bin")
                state = json.loads(json.dumps(aug.state_dict()))
            assert len(state["pipeline"]["queue"]) == 4
            m = aug.metrics()
            assert m["aug/accepted"] == 0 and m["aug/rejected"] == 0, m
            assert len(pool.inbox) == 0
        finally:
            slow.close()
        fast = ChatServer()
        try:
            pool2 = Pool.load(tmp_path / "pool.bin")
            aug2 = make_aug(pool2, validators=[openai(fast.url)])
            aug2.load_state_dict(state)
            try:
                assert aug2.pipeline.wait_idle(10)
                m = assert_accounting(aug2)
                assert m["aug/accepted"] == 4 and m["aug/proposed"] == 4
                new = pool2.drain_inbox()
                assert len(new) == 4 and len(set(pool2.prompts(new))) == 4
                assert sorted(fast.hits.values()) == [1, 1, 1, 1]
            finally:
                aug2.close()
        finally:
            fast.close()


class DripServer:
    """A real HTTP server that answers 200 with a long Content-Length, then drips one byte every 0.25 s for
    up to 60 s: every read returns within a per-read timeout, the whole response never comes."""

    def __init__(self) -> None:
        self.hits = 0
        self.stop = threading.Event()
        lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    server.hits += 1
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    end = time.monotonic() + 60
                    while time.monotonic() < end and not server.stop.wait(0.25):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                except OSError:  # the client hung up
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class TestFaults:
    def test_invalid_text_is_rejected_and_the_rest_inserted(self, chat_server):
        """A validator reply with a lone surrogate is rejected (``invalid_text``); it blocks nobody."""
        pool, ids = make_pool()

        def variant(p, j):
            word = "surrogate" if p == "0+4=" else "ok"
            return f"{word} {_bump(p, j)}\ndifficulty: 1.1\nend"

        aug = make_aug(pool, backend=ScriptedBackend(variant=variant), validators=[openai(chat_server.url)])
        try:
            aug.after_step(None, ids[:5], np.full(5, 0.5), step=1)
            assert aug.pipeline.wait_idle(10)
            m = assert_accounting(aug)
            assert m["aug/rejected/invalid_text"] == 1 and m["aug/accepted"] == 4 and m["aug/inserted"] == 4, m
            assert sorted(pool.prompts(pool.drain_inbox())) == ["OK 1+0=", "OK 1+2=", "OK 1+6=", "OK 1+8="]
        finally:
            aug.close()

    @pytest.mark.parametrize("refusal", ["pool", "invalid_input_error"])
    def test_inbox_refusals_reject_only_the_bad_items(self, refusal):
        """Accepted candidates wait for inbox room as one batch; when the inbox refuses the batch because of
        some items, exactly those are rejected (``invalid_input``) and the rest go in, never retried."""
        pool, ids = make_pool()
        full = True  # the inbox has no room at first: accepted candidates pile up as one pending batch

        def commit(cands):
            if full:
                return 0
            texts = [c.info["text"] for c in cands]
            if refusal == "invalid_input_error" and any("\ud800" in t for t in texts):
                raise InvalidInputError("prompts: invalid text")  # what the binding may raise instead
            return pool.inbox.push(texts, answers=[c.answer for c in cands], parents=[c.parent_id for c in cands])

        texts = [f"{i}+1=" if i not in (2, 5) else f"{i}+\ud800" for i in range(8)]
        cands = [Candidate(int(ids[0]), "p", f"q{i}", 1.0, answer="1", info={"text": t}) for i, t in enumerate(texts)]
        pipe = ValidationPipeline([], commit, workers=1)
        pipe.start()
        try:
            assert pipe.submit(cands) == 8
            assert pipe.wait_idle(10)
            assert len(pipe.accepted_pending()) == 8
            full = False
            assert pipe.flush() == 6
        finally:
            pipe.close()
        c = pipe.counts
        assert c["accepted"] == 6 and c["inserted"] == 6 and c["rejected/invalid_input"] == 2, c
        assert c["enqueued"] == c["accepted"] + c["rejected/invalid_input"] and not pipe.accepted_pending()
        assert sorted(pool.prompts(pool.drain_inbox())) == sorted(t for t in texts if "\ud800" not in t)

    def test_restart_after_close_validates_with_real_requests(self, chat_server):
        """close() then start() works like a fresh start (``trainer.train()`` twice on one trainer does it):
        candidates reach the endpoint instead of being rejected by the stop flag of the first close."""
        pool, ids = make_pool()
        aug = make_aug(pool, validators=[openai(chat_server.url)])
        try:
            aug.after_step(None, ids[:2], np.full(2, 0.5), step=1)
            assert aug.pipeline.wait_idle(10)
            aug.close()
            aug.start()
            aug.after_step(None, ids[2:4], np.full(2, 0.5), step=2)
            assert aug.pipeline.wait_idle(10)
            m = assert_accounting(aug)
            assert m["aug/accepted"] == 4 and m["aug/rejected"] == 0, m
            assert sorted(chat_server.hits) == ["1+0=", "1+2=", "1+4=", "1+6="]
            assert set(chat_server.hits.values()) == {1}
        finally:
            aug.close()

    def test_timeout_is_a_deadline_for_the_whole_request(self):
        drip = DripServer()
        v = openai(drip.url, timeout=0.5, max_retries=0)
        verdicts = []
        pipe = ValidationPipeline(
            [v], len, workers=1, max_requeues=0, on_result=lambda c, ok, r: verdicts.append((ok, r, c.info["error"]))
        )
        pipe.start()
        try:
            assert pipe.submit([Candidate(1, "p", "drip problem", 1.0)]) == 1
            # A generous bound: a per-read timeout would hold the request for the server's 60 s of dripping.
            assert pipe.wait_idle(30)
        finally:
            pipe.close()
            drip.close()
        assert verdicts == [(False, "openai_error", "timeout")]
        assert v.stats["error/timeout"] == 1 and drip.hits == 1

    def test_close_aborts_requests_in_flight(self):
        """close() ends its workers within its timeout, even with requests in flight to a server that takes
        a minute; the interrupted candidates stay held, unjudged."""
        drip = DripServer()
        v = openai(drip.url, timeout=120.0, max_retries=0)
        pipe = ValidationPipeline([v], len, workers=2)
        pipe.start()
        workers = list(pipe._threads)
        try:
            assert pipe.submit([Candidate(1, "p", f"drip problem {i}", 1.0) for i in range(2)]) == 2
            assert wait_for(lambda: drip.hits == 2 and pipe.sizes()["in_flight"] == 2)
            pipe.close(timeout=10)
            assert not any(t.is_alive() for t in workers) and not pipe.running
            assert len(pipe.held()) == 2 and pipe.counts["abandoned"] == 0
            assert not any(k.startswith("rejected/") for k in pipe.counts)
        finally:
            pipe.close(timeout=1)
            drip.close()


def test_config_validation_and_shortcuts():
    with pytest.raises(ValueError, match="validator_url"):
        AugmentationConfig(validator="openai")
    with pytest.raises(ValueError, match="parents"):
        AugmentationConfig(parents="some")
    with pytest.raises(ValueError, match="variants_per_parent"):
        AugmentationConfig(variants_per_parent=0)
    with pytest.raises(ValueError, match="pass_rate_band"):
        AugmentationConfig(pass_rate_band=(0.8, 0.2))
    (v,) = AugmentationConfig(validator="openai", validator_url="http://h:1/v1", validator_model="m").build_validators()
    assert isinstance(v, OpenAIValidator) and v.url == "http://h:1/v1/chat/completions" and v.model == "m"
    (sc,) = AugmentationConfig(self_consistency_k=5, agreement=0.6, solve_max_new_tokens=7).build_validators()
    assert isinstance(sc, SelfConsistencyValidator) and sc.needs_policy and sc.sampling.n == 5
    assert sc.sampling.max_new_tokens == 7 and sc.threshold == 0.6
    s = AugmentationConfig(variants_per_parent=2, seed=3).sampling(step=4)
    assert (s.n, s.max_new_tokens, s.seed) == (2, 400, 7)


def test_restart_after_close_and_trainer_callback():
    pool, ids = make_pool()
    aug = make_aug(pool)
    aug.close()
    cb = aug.trainer_callback()
    cb.on_train_begin(None, types.SimpleNamespace(is_world_process_zero=True), None)
    try:
        assert aug.pipeline.running
        aug.after_step(None, ids[:2], np.full(2, 0.5), step=1)
        assert aug.pipeline.wait_idle(5) and aug.metrics()["aug/accepted"] == 2
    finally:
        cb.on_train_end(None, types.SimpleNamespace(is_world_process_zero=True), None)
    assert not aug.pipeline.running


# ---------------------------------------------------------------------- checkpoints


def test_state_dict_round_trip_with_a_non_empty_queue(tmp_path):
    pool, ids = make_pool()
    gate = threading.Event()

    class Gated:
        name = "gated"

        def validate(self, c):
            if not gate.wait(10):
                raise TimeoutError
            return Verdict.accept(answer=solve_sum(c.problem))

    aug = make_aug(pool, validators=[Gated()], workers=1, variants_per_parent=2)
    aug.after_step(None, ids[:3], np.full(3, 0.5), step=1)
    with aug.paused():
        pool.save(tmp_path / "pool.bin")
        aug.save(str(tmp_path))
    assert aug.metrics()["aug/queue_depth"] == 6
    aug.close(timeout=0.05)
    gate.set()

    pool2 = Pool.load(tmp_path / "pool.bin")
    aug2 = make_aug(pool2, validators=[Gated()], variants_per_parent=2)
    assert aug2.load(str(tmp_path))
    try:
        assert aug2.pipeline.wait_idle(5)
        m = assert_accounting(aug2)
        assert m["aug/accepted"] == 6 and m["aug/inserted"] == 6
        new = pool2.drain_inbox()
        assert len(new) == 6 and len(set(pool2.prompts(new))) == 6
        # dedup state came back too: the same variants are duplicates now
        aug2.after_step(None, ids[:3], np.full(3, 0.5), step=2)
        assert aug2.metrics()["aug/rejected/duplicate"] == 6
    finally:
        aug2.close()


def test_pipeline_state_keeps_accepted_but_uninserted():
    pipe = ValidationPipeline([], lambda cands: 0, workers=1)
    pipe._pending.append(Candidate(1, "p", "q", 1.0, answer="2"))
    state = json.loads(json.dumps(pipe.state_dict()))
    other = ValidationPipeline([], lambda cands: len(cands), workers=1)
    other.load_state_dict(state)
    assert other.flush() == 1 and other.counts["inserted"] == 1


# ---------------------------------------------------------------------- TRL hook


def _train_with_augmentation(warm_model, tmp_path, backend=None, **aug):
    """Three GRPO steps of ``HeaPAGRPOTrainer(augmentation=...)`` with the warm tiny model; returns
    (trainer, ids of the prompts each round trained on). ``backend``: replaces the policy as the writer of
    variants (after checking that the trainer wired the policy in)."""
    trl_mod = pytest.importorskip("heapa.trl")
    from datasets import Dataset
    from heapa.testing import tiny_grpo_config

    model, tok, _ = warm_model
    rounds: list[np.ndarray] = []

    class Trainer(trl_mod.HeaPAGRPOTrainer):
        def _heapa_after_scoring(self, scored):
            rounds.append(scored.ids.copy())
            super()._heapa_after_scoring(scored)

    def reward(completions, answer, **kw):
        return [1.0 if c.strip().startswith(a) else 0.0 for c, a in zip(completions, answer, strict=True)]

    args = tiny_grpo_config(str(tmp_path), max_completion_length=3, learning_rate=1e-4)
    ds = Dataset.from_dict(
        {"prompt": SEEDS, "answer": [solve_sum(s) for s in SEEDS], "level": [1 + i % 2 for i in range(len(SEEDS))]}
    )
    aug.update(template=COMPACT_TEMPLATE, fmt=LOWER, min_chars=3, max_new_tokens=32, variants_per_parent=2)
    trainer = Trainer(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=ds,
        processing_class=tok,
        augmentation=AugmentationConfig(**aug),
    )
    assert isinstance(trainer.heapa_augmenter.backend, TransformersBackend)
    if backend is not None:
        trainer.heapa_augmenter.backend = backend
    try:
        trainer.train()  # ends with the augmenter closed (its callback)
    finally:
        trainer.heapa_augmenter.close()
    return trainer, np.concatenate(rounds)


def assert_children_of_trained_prompts(trainer, trained: np.ndarray, *, scripted: bool) -> np.ndarray:
    """Every child's parent is a prompt that was trained before it; children inherit the parent's metadata.

    scripted: the variants came from ``ScriptedBackend``, so children certainly exist and each is a scripted
    variant of its own parent (this checks that a child is filed under the prompt it was written from).
    Otherwise the model wrote them: nothing here may depend on that text, not even that children exist.
    """
    pool = trainer.heapa_pool
    trainer.heapa_augmenter.on_drained(pool.drain_inbox())  # what was accepted after the last round
    kids = children_of(pool, np.zeros(0, dtype=np.uint64))
    parents = pool.lineage(kids)["parent"]
    assert set(parents.tolist()) <= set(trained.tolist())
    assert pool.metadata(kids) == pool.metadata(parents)
    assert not set(pool.prompts(kids)) & set(SEEDS)  # new problems (duplicates are filtered)
    if scripted:
        assert len(kids) >= 1
        for child, parent in zip(pool.prompts(kids), pool.prompts(parents), strict=True):
            assert child in {_bump(parent, j) for j in range(2)}, (child, parent)
    return kids


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_trainer_augmentation_end_to_end(warm_model, tmp_path):
    """``HeaPAGRPOTrainer(augmentation=...)``: the policy (TransformersBackend) writes variants right after
    each round, self-consistency validates them on background threads, and the aug/* metrics reach the
    trainer's log. The model's text is whatever it samples: the assertions are mechanics and accounting
    that hold even when no variant parses (test_trainer_augmentation_children_have_lineage proves with
    scripted text that children enter)."""
    solver = SelfConsistencyValidator(k=2, solver=lambda p, k: [solve_sum(p)] * k)
    trainer, trained = _train_with_augmentation(warm_model, tmp_path, validators=[solver])
    kids = assert_children_of_trained_prompts(trainer, trained, scripted=False)
    pool = trainer.heapa_pool
    assert pool.answers(kids) == [solve_sum(p) for p in pool.prompts(kids)]  # the validator's ground truth
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 3 and all("aug/proposed" in h and "aug/queue_depth" in h for h in logged)
    assert logged[-1]["aug/proposed"] == 3 * 2 * 2  # 2 prompts x 2 variants per round
    m = assert_accounting(trainer.heapa_augmenter)
    assert m["aug/parsed"] + m.get("aug/rejected/malformed", 0) == m["aug/proposed"]  # each parsed or not
    assert m["aug/drained"] == len(kids)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_trainer_augmentation_children_have_lineage(warm_model, tmp_path):
    """The same trainer path with the variants' text made certain: ``ScriptedBackend`` (a TEST DOUBLE of the
    policy) writes them, and they go through the same parse / filter / validate / insert path. Children
    enter under the prompts they were written from, with the validator's answers."""
    solver = SelfConsistencyValidator(k=2, solver=lambda p, k: [solve_sum(p)] * k)
    trainer, trained = _train_with_augmentation(warm_model, tmp_path, ScriptedBackend(), validators=[solver])
    kids = assert_children_of_trained_prompts(trainer, trained, scripted=True)
    pool = trainer.heapa_pool
    assert pool.answers(kids) == [solve_sum(p) for p in pool.prompts(kids)]
    m = assert_accounting(trainer.heapa_augmenter)
    assert m["aug/parsed"] == m["aug/proposed"] == 3 * 2 * 2
    assert m["aug/accepted"] == m["aug/drained"] == len(kids)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_trainer_augmentation_with_an_openai_validator(warm_model, tmp_path, chat_server):
    """``validator="openai"`` wiring: the endpoint (a real local HTTP server) supplies answers and problems.
    ``ScriptedBackend`` writes the variants so that candidates certainly reach the endpoint."""
    trainer, trained = _train_with_augmentation(
        warm_model,
        tmp_path,
        ScriptedBackend(),
        validator="openai",
        validator_url=chat_server.url,
        validator_timeout=5.0,
    )
    kids = assert_children_of_trained_prompts(trainer, trained, scripted=True)
    pool = trainer.heapa_pool
    assert pool.answers(kids) == [str(len(p)) for p in pool.prompts(kids)]  # what the server answered
    assert_accounting(trainer.heapa_augmenter)
    assert sum(chat_server.hits.values()) >= len(kids)  # training may end with some still queued
    assert set(chat_server.hits.values()) == {1}  # each candidate validated once


def test_config_fields_have_help_and_errors_name_the_field():
    import dataclasses

    from heapa.exceptions import InvalidInputError

    assert all(f.metadata.get("help") for f in dataclasses.fields(AugmentationConfig))
    for bad in (dict(top_p=0.0), dict(agreement=1.5), dict(workers="4"), dict(max_chars=2), dict(max_depth=-1)):
        (name,) = bad
        with pytest.raises(InvalidInputError, match=f"AugmentationConfig.{name}:"):
            AugmentationConfig(**bad)


def test_candidate_child_prompt_and_dedup_key_are_fields():
    seen = []
    v = SelfConsistencyValidator(k=2, solver=lambda p, k: seen.append(p) or ["3"] * k)
    assert v.validate(Candidate(1, "p", "bare", 1.0, child_prompt="wrapped bare")).answer == "3"
    assert seen == ["wrapped bare"]
    old = Candidate(1, "p", "q", 1.0).to_dict()  # a checkpoint from before: both lived in info
    del old["child_prompt"], old["dedup_key"]
    old["info"] = {"child_prompt": "cp", "dedup_key": "k", "agreement": 1.0}
    c = Candidate.from_dict(old)
    assert (c.child_prompt, c.dedup_key, c.info) == ("cp", "k", {"agreement": 1.0})
