"""A tiny GPT and a seeded Markov token stream: the offline workload of the PaRO experiments.

``TinyGPT`` is a decoder-only transformer (pre-norm blocks, learned positions, no dropout, untied
head) with vocabulary 256 (bytes), so a local text file can be used as is. ``MarkovTokens`` draws a
random sparse first-order Markov chain from a seed and yields batches as a pure function of
``(seed, step, rank, micro)``: a resumed run sees exactly the batches it would have seen.

>>> model = TinyGPT(vocab=256, dim=32, layers=2, heads=2, seq_len=16)
>>> x = MarkovTokens(seed=0).batch(step=0, rank=0, micro=0, batch_size=4, seq_len=16)
>>> x.shape, model(x[:, :-1]).shape
(torch.Size([4, 17]), torch.Size([4, 16, 256]))
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Block", "MarkovTokens", "TextTokens", "TinyGPT", "lm_loss"]


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 4 * dim)
        self.out = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    """Decoder-only transformer; ``forward(tokens[B, T]) -> logits[B, T, vocab]``."""

    def __init__(self, vocab: int = 256, dim: int = 128, layers: int = 4, heads: int = 4, seq_len: int = 64) -> None:
        super().__init__()
        for name, v in (("vocab", vocab), ("dim", dim), ("layers", layers), ("heads", heads), ("seq_len", seq_len)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.seq_len = seq_len
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(seq_len, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise ValueError(f"tokens must be a (batch, time) int64 tensor, got {tuple(tokens.shape)} {tokens.dtype}")
        t = tokens.shape[1]
        if t > self.seq_len:
            raise ValueError(f"sequence length {t} exceeds the model's seq_len {self.seq_len}")
        x = self.tok(tokens) + self.pos(torch.arange(t, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def lm_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of ``batch[B, T+1]``."""
    logits = model(batch[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1))


class MarkovTokens:
    """A seeded first-order Markov chain over ``vocab`` tokens with ``branching`` successors each."""

    def __init__(self, seed: int = 0, vocab: int = 256, branching: int = 4) -> None:
        if not 1 <= branching <= vocab:
            raise ValueError(f"branching must be in [1, vocab], got {branching}")
        g = torch.Generator().manual_seed(seed)
        self.seed, self.vocab = seed, vocab
        self.next = torch.stack([torch.randperm(vocab, generator=g)[:branching] for _ in range(vocab)])
        self.probs = torch.rand(vocab, branching, generator=g).add_(0.1)
        self.probs /= self.probs.sum(1, keepdim=True)

    def batch(self, step: int, rank: int, micro: int, batch_size: int, seq_len: int) -> torch.Tensor:
        """``(batch_size, seq_len + 1)`` tokens, a pure function of the arguments and the seed."""
        g = torch.Generator().manual_seed(hash((self.seed, step, rank, micro)) & 0x7FFF_FFFF_FFFF)
        out = torch.empty(batch_size, seq_len + 1, dtype=torch.long)
        out[:, 0] = torch.randint(self.vocab, (batch_size,), generator=g)
        for t in range(seq_len):
            choice = torch.multinomial(self.probs[out[:, t]], 1, generator=g).squeeze(1)
            out[:, t + 1] = self.next[out[:, t], choice]
        return out


class TextTokens:
    """Byte tokens of a local text file; batches are windows at offsets drawn from ``(seed, step, rank, micro)``."""

    def __init__(self, path: str | Path, seed: int = 0) -> None:
        data = Path(path).read_bytes()
        if len(data) < 2:
            raise ValueError(f"text file {path} has fewer than 2 bytes")
        self.data = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
        self.seed = seed
        self.vocab = 256

    def batch(self, step: int, rank: int, micro: int, batch_size: int, seq_len: int) -> torch.Tensor:
        if len(self.data) < seq_len + 1:
            raise ValueError(f"text file has {len(self.data)} bytes, fewer than seq_len + 1 = {seq_len + 1}")
        g = torch.Generator().manual_seed(hash((self.seed, step, rank, micro)) & 0x7FFF_FFFF_FFFF)
        starts = torch.randint(len(self.data) - seq_len, (batch_size,), generator=g)
        return torch.stack([self.data[s : s + seq_len + 1] for s in starts.tolist()])
