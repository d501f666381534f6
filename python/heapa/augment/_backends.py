"""Generation backends: the current policy writes variants (and, for self-consistency, solves them).

A backend turns prompt strings into completions of the *response only* (the prompt is never part of
the returned text, which is what caused the reference's B12). Two implementations:

* ``TransformersBackend``: ``model.generate`` with the live policy weights, on any device (CPU too).
  Inside TRL it goes through ``trl.models.unwrap_model_for_generation`` exactly as TRL's own
  non-vLLM path does (DeepSpeed ZeRO-3 gathering, gradient checkpointing switched off meanwhile).
* ``VLLMBackend``: TRL's vLLM engine (``trainer.vllm_generation.llm`` in colocate mode, the
  ``vllm_client`` in server mode) or a standalone ``vllm.LLM``, always with its own sampling
  parameters: ``max_tokens`` (vLLM's default is 16) and stop strings that come after the difficulty
  line (the reference's were silently ignored, B5). vLLM is imported lazily.

``collective`` tells the caller whether every rank must call ``generate`` with its shard (ZeRO-3/FSDP
models, colocated vLLM engines) or the main process alone generates.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Completion",
    "GenerationBackend",
    "Sampling",
    "TransformersBackend",
    "VLLMBackend",
    "truncate_at_stop",
]


@dataclass(frozen=True)
class Sampling:
    """Decoding settings of one generation call (independent of the trainer's own)."""

    n: int = 1
    max_new_tokens: int = 400
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1:
            raise ValueError(f"Sampling: n and max_new_tokens must be >= 1, got {self.n}, {self.max_new_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"Sampling: bad temperature/top_p {self.temperature}, {self.top_p}")
        object.__setattr__(self, "stop", tuple(self.stop))


@dataclass(frozen=True)
class Completion:
    """One sampled response: its text (response only, cut before any stop string) and token ids."""

    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: str = "length"  # "stop" (EOS or a stop string) or "length"


@runtime_checkable
class GenerationBackend(Protocol):
    """``generate(prompts, sampling)`` returns, per prompt, ``sampling.n`` completions."""

    collective: bool

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, *, add_special_tokens: bool = True
    ) -> list[list[Completion]]: ...


def truncate_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cuts ``text`` before the earliest stop string (vLLM's semantics); returns (text, whether one hit)."""
    cut = -1
    for s in stops:
        if s:
            i = text.find(s)
            if i >= 0 and (cut < 0 or i < cut):
                cut = i
    return (text, False) if cut < 0 else (text[:cut], True)


def tokenizer_of(processing_class: Any) -> Any:
    """The text tokenizer of a TRL ``processing_class`` (a tokenizer or a processor holding one)."""
    return getattr(processing_class, "tokenizer", None) or processing_class


# ---------------------------------------------------------------------- transformers


class TransformersBackend:
    """Generates with a transformers model (the live policy) on whatever device it is on.

    model: the policy (``trainer.model``); tokenizer: its tokenizer (left padding is applied per call).
    accelerator / model_wrapped: inside a trainer, unwrap through TRL like its own generation path.
    batch_size: prompts per ``generate`` call.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        accelerator: Any = None,
        trainer: Any = None,
        batch_size: int = 32,
        gather_deepspeed3_params: bool = True,
        collective: bool = False,
    ) -> None:
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is None:
            raise ValueError("TransformersBackend: the tokenizer needs a pad or an eos token")
        self._model = model
        self.tokenizer = tokenizer
        self.trainer = trainer
        self.accelerator = accelerator if accelerator is not None else getattr(trainer, "accelerator", None)
        self.batch_size = max(1, int(batch_size))
        self.gather_deepspeed3_params = gather_deepspeed3_params
        self.collective = bool(collective)

    @property
    def model(self) -> Any:
        # Inside a trainer, read the model at call time: preparation (DDP, DeepSpeed) replaces the wrapper.
        return self.trainer.model if self.trainer is not None else self._model

    @classmethod
    def from_trainer(cls, trainer: Any, *, batch_size: int = 32) -> TransformersBackend:
        acc = trainer.accelerator
        ds = getattr(acc.state, "deepspeed_plugin", None)
        sharded = (ds is not None and getattr(ds, "zero_stage", 0) == 3) or (
            getattr(acc.state, "fsdp_plugin", None) is not None
        )
        return cls(
            trainer.model,
            tokenizer_of(trainer.processing_class),
            trainer=trainer,
            batch_size=batch_size,
            gather_deepspeed3_params=getattr(trainer.args, "ds3_gather_for_generation", True),
            collective=sharded and acc.num_processes > 1,
        )

    @contextlib.contextmanager
    def _unwrapped(self) -> Iterator[Any]:
        if self.accelerator is None:
            yield self.model
            return
        from trl.models import unwrap_model_for_generation

        wrapped = getattr(self.trainer, "model_wrapped", None) or self.model
        with unwrap_model_for_generation(
            wrapped, self.accelerator, gather_deepspeed3_params=self.gather_deepspeed3_params
        ) as model:
            try:
                from trl.distributed import DistributedBackend

                summon = DistributedBackend(self.accelerator).summon_full_params(wrapped, recurse=False)
            except (ImportError, AttributeError):
                summon = contextlib.nullcontext()
            with summon:
                yield model

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, *, add_special_tokens: bool = True
    ) -> list[list[Completion]]:
        import torch
        from transformers import GenerationConfig, StoppingCriteriaList

        prompts = list(prompts)
        if not prompts:
            return []
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "num_return_sequences": sampling.n,
            "pad_token_id": pad,
            "eos_token_id": tok.eos_token_id,
            "do_sample": sampling.temperature > 0,
        }
        if sampling.temperature > 0:
            gen_kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=None)
        config = GenerationConfig(**gen_kwargs)
        out: list[list[Completion]] = []
        with self._unwrapped() as model, torch.no_grad():
            device = next(model.parameters()).device
            devices = [device] if device.type == "cuda" else []
            rng = torch.random.fork_rng(devices=devices) if sampling.seed is not None else contextlib.nullcontext()
            with rng:
                if sampling.seed is not None:
                    torch.manual_seed(sampling.seed)
                for start in range(0, len(prompts), self.batch_size):
                    chunk = prompts[start : start + self.batch_size]
                    enc = tok(
                        chunk,
                        return_tensors="pt",
                        padding=True,
                        padding_side="left",
                        add_special_tokens=add_special_tokens,
                    )
                    input_ids = enc["input_ids"].to(device)
                    width = input_ids.shape[1]
                    criteria = StoppingCriteriaList(
                        [_stop_criterion_class()(tok, sampling.stop, width)] if sampling.stop else []
                    )
                    seqs = model.generate(
                        input_ids=input_ids,
                        attention_mask=enc["attention_mask"].to(device),
                        generation_config=config,
                        stopping_criteria=criteria,
                    )
                    # Response tokens only: everything after the (left-padded) prompt width (B12).
                    rows = [self._completion(r, sampling.stop) for r in seqs[:, width:].tolist()]
                    out.extend(rows[i : i + sampling.n] for i in range(0, len(rows), sampling.n))
        return out

    def _completion(self, ids: list[int], stops: Sequence[str]) -> Completion:
        tok = self.tokenizer
        finish = "length"
        if tok.eos_token_id is not None and tok.eos_token_id in ids:
            ids = ids[: ids.index(tok.eos_token_id)]
            finish = "stop"
        pad = tok.pad_token_id
        if pad is not None and pad != tok.eos_token_id:
            while ids and ids[-1] == pad:
                ids.pop()
        text, hit = truncate_at_stop(tok.decode(ids, skip_special_tokens=True), stops)
        return Completion(text, tuple(ids), "stop" if hit else finish)


@functools.cache
def _stop_criterion_class() -> type:
    from transformers import StoppingCriteria

    class StopOnStrings(StoppingCriteria):
        """Per-row stop strings: decodes only the last few response tokens of each row at each step."""

        def __init__(self, tokenizer: Any, stops: Sequence[str], width: int) -> None:
            self.tokenizer = tokenizer
            self.stops = [s for s in stops if s]
            self.width = width
            self.window = max(len(s) for s in self.stops) + 8

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            start = max(self.width, input_ids.shape[1] - self.window)
            tails = self.tokenizer.batch_decode(input_ids[:, start:].tolist(), skip_special_tokens=True)
            done = [any(s in t for s in self.stops) for t in tails]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StopOnStrings


# ---------------------------------------------------------------------- vLLM


class VLLMBackend:
    """Generates with vLLM: a ``vllm.LLM`` (colocated or standalone) or TRL's server client.

    Exactly one of ``llm`` / ``client`` is used (neither on non-main ranks in server mode, where only
    the main process generates). With a ``tokenizer`` prompts are sent as token ids, as TRL does, so
    special tokens are added exactly once.
    """

    def __init__(
        self,
        llm: Any = None,
        *,
        client: Any = None,
        tokenizer: Any = None,
        tensor_parallel_size: int = 1,
        collective: bool = False,
    ) -> None:
        if llm is not None and client is not None:
            raise ValueError("VLLMBackend: pass an LLM or a client, not both")
        if client is not None and tokenizer is None:
            raise ValueError("VLLMBackend: server mode returns token ids; pass the tokenizer to decode them")
        self.llm = llm
        self.client = client
        self.tokenizer = tokenizer
        self.group_size = max(1, int(tensor_parallel_size))
        self.collective = bool(collective)

    @classmethod
    def from_trainer(cls, trainer: Any) -> VLLMBackend:
        """Reuses the trainer's engine; it holds this step's weights right after TRL generated the round."""
        args = trainer.args
        vg = getattr(trainer, "vllm_generation", None)
        if not getattr(args, "use_vllm", False) or vg is None:
            raise ValueError("VLLMBackend.from_trainer: the trainer does not use vLLM (GRPOConfig(use_vllm=True))")
        if getattr(vg, "enable_sleep_mode", False) or getattr(args, "vllm_enable_sleep_mode", False):
            raise NotImplementedError(
                "heapa.augment: vLLM sleep mode discards the engine's weights after TRL's generation; "
                "augmentation with vllm_enable_sleep_mode=True is not supported yet."
            )
        tok = tokenizer_of(trainer.processing_class)
        mode = getattr(vg, "mode", getattr(args, "vllm_mode", "colocate"))
        if mode == "server":
            client = vg.vllm_client if trainer.accelerator.is_main_process else None
            return cls(client=client, tokenizer=tok) if client is not None else cls(tokenizer=tok)
        tp = int(getattr(vg, "tensor_parallel_size", 1))
        return cls(vg.llm, tokenizer=tok, tensor_parallel_size=tp, collective=trainer.accelerator.num_processes > 1)

    @classmethod
    def standalone(cls, model: str, *, tokenizer: Any = None, **engine_kwargs: Any) -> VLLMBackend:
        """A separate ``vllm.LLM`` (its own weights: it does not follow training unless you push them)."""
        from vllm import LLM

        return cls(LLM(model=model, **engine_kwargs), tokenizer=tokenizer)

    def sampling_params(self, sampling: Sampling) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            stop=list(sampling.stop),
            seed=sampling.seed,
            include_stop_str_in_output=False,
            skip_special_tokens=True,
        )

    def _encode(self, prompts: list[str], add_special_tokens: bool) -> list[list[int]] | None:
        if self.tokenizer is None:
            return None
        enc = self.tokenizer(prompts, add_special_tokens=add_special_tokens)
        return [list(ids) for ids in enc["input_ids"]]

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, *, add_special_tokens: bool = True
    ) -> list[list[Completion]]:
        prompts = list(prompts)
        if not prompts:
            return []
        ids = self._encode(prompts, add_special_tokens)
        if self.llm is not None:
            inputs: list[Any] = prompts if ids is None else [{"prompt_token_ids": x} for x in ids]
            results = self.llm.generate(inputs, self.sampling_params(sampling), use_tqdm=False)
            return [
                [self._from_text(o.text, o.token_ids, o.finish_reason, sampling.stop) for o in r.outputs]
                for r in results
            ]
        if self.client is None:
            raise RuntimeError("VLLMBackend: no engine on this process (server mode generates on the main process)")
        extra: dict[str, Any] = {
            "stop": list(sampling.stop),
            "include_stop_str_in_output": False,
            "skip_special_tokens": True,
        }
        if sampling.seed is not None:
            extra["seed"] = sampling.seed
        res = self.client.generate(
            prompts=ids,
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            generation_kwargs=extra,
        )
        flat = res["completion_ids"]  # prompt-major: the n completions of a prompt are adjacent
        if len(flat) != len(prompts) * sampling.n:
            raise RuntimeError(f"vLLM server returned {len(flat)} completions for {len(prompts)}x{sampling.n}")
        eos = self.tokenizer.eos_token_id
        out = []
        for i in range(len(prompts)):
            row = []
            for toks in flat[i * sampling.n : (i + 1) * sampling.n]:
                toks = list(toks)
                finish = "stop" if eos is not None and toks and toks[-1] == eos else "length"
                text = self.tokenizer.decode(toks, skip_special_tokens=True)
                row.append(self._from_text(text, toks, finish, sampling.stop))
            out.append(row)
        return out

    @staticmethod
    def _from_text(text: str, token_ids: Any, finish: Any, stops: Sequence[str]) -> Completion:
        text, hit = truncate_at_stop(text, stops)
        reason = "stop" if hit or finish == "stop" else "length"
        return Completion(text, tuple(token_ids or ()), reason)
