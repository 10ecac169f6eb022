"""The DrasCLR objective: MoCo v2 with a momentum key encoder and one negative queue per anatomical location.

For a batch of B patches of ONE location j (many subjects):

- query ``q = normalise(g(f(x_q, j)))``, key ``k = normalise(g_m(f_m(x_k, j)))`` (two views of the same patch;
  f/g the encoder and projection head, f_m/g_m their momentum copies, keys without gradient);
- local loss: InfoNCE of ``q`` against the positive ``k`` and the K keys queued for location j
  (the same anatomy in other subjects);
- neighbouring loss: the k = 2 nearest locations of j in the same subject are encoded with their own location
  codes, L2-normalised and summed, ``s = sum_n normalise(g(f(x_n, j_n)))``; InfoNCE of ``s`` against the same
  positive key and location j's queue;
- total = local + beta * neighbouring. Temperature T, momentum m, queue length K are configurable.

Under DDP, keys use shuffle-BN (the key batch is gathered, shuffled across ranks, encoded, unshuffled) and the
gathered keys of all ranks are enqueued, so every rank's queues stay identical.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..core import distributed as D
from ..model import DrasCLREncoder, ProjectionHead


class DrasCLRObjective(nn.Module):
    """Query/key encoders + heads + per-location queues. ``forward(batch) -> (loss, stats)``.

    ``batch``: ``query``, ``key`` ``(B, 1, 32, 32, 32)``; ``loc`` ``(B, 3)``; ``neighbours`` ``(B, k, 1, 32, 32, 32)``;
    ``neighbour_loc`` ``(B, k, 3)``; ``location`` ``(B,)`` (all equal: one location per batch).
    Queues: buffer ``queue`` ``(L, K, dim)`` and ``queue_ptr`` ``(L,)``; not part of the exported encoder.
    """

    def __init__(self, n_locations: int, encoder_config: dict | None = None, dim: int = 128, queue_size: int = 4096,
                 momentum: float = 0.999, temperature: float = 0.2, beta: float = 1.0, shuffle_bn: bool = True,
                 encoder_cls: type = DrasCLREncoder):
        super().__init__()
        self.encoder_q = encoder_cls(**(encoder_config or {}))
        self.head_q = ProjectionHead(self.encoder_q.rep_dim, dim)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.head_k = copy.deepcopy(self.head_q)
        for p in list(self.encoder_k.parameters()) + list(self.head_k.parameters()):
            p.requires_grad_(False)
        self.m, self.T, self.beta, self.K, self.shuffle_bn = momentum, temperature, beta, queue_size, shuffle_bn
        self.register_buffer("queue", F.normalize(torch.randn(n_locations, queue_size, dim), dim=-1))
        self.register_buffer("queue_ptr", torch.zeros(n_locations, dtype=torch.long))

    def queue_bytes(self) -> int:
        return self.queue.numel() * self.queue.element_size()

    def key_parameters(self):
        return list(self.encoder_k.parameters()) + list(self.head_k.parameters())

    def query_parameters(self):
        return list(self.encoder_q.parameters()) + list(self.head_q.parameters())

    @torch.no_grad()
    def momentum_update(self) -> None:
        for pk, pq in zip(self.key_parameters(), self.query_parameters()):
            pk.mul_(self.m).add_(pq.detach(), alpha=1.0 - self.m)

    def _query(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head_q(self.encoder_q(x, loc)).float(), dim=1)

    @torch.no_grad()
    def _keys(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        if not (self.shuffle_bn and D.world_size() > 1):
            return F.normalize(self.head_k(self.encoder_k(x, loc)).float(), dim=1)
        b = x.shape[0]
        xs, ls = D.all_gather(x), D.all_gather(loc)
        perm = D.broadcast_(torch.randperm(xs.shape[0], device=x.device), 0)
        mine = perm.view(D.world_size(), b)[D.rank()]
        k = F.normalize(self.head_k(self.encoder_k(xs[mine], ls[mine])).float(), dim=1)
        k_all = D.all_gather(k)
        return k_all[torch.argsort(perm)].view(D.world_size(), b, -1)[D.rank()]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, location: int) -> None:
        """Write ``keys`` ``(n, dim)`` (all ranks' keys) into location's ring buffer."""
        n = keys.shape[0]
        ptr = int(self.queue_ptr[location])
        idx = (ptr + torch.arange(n, device=keys.device)) % self.K
        self.queue[location, idx] = keys.to(self.queue.dtype)
        self.queue_ptr[location] = (ptr + n) % self.K

    def _infonce(self, a: torch.Tensor, k: torch.Tensor, negs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.cat([(a * k).sum(1, keepdim=True), a @ negs.T], 1) / self.T
        target = torch.zeros(a.shape[0], dtype=torch.long, device=a.device)
        return F.cross_entropy(logits, target), (logits.argmax(1) == 0).float().mean()

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        loc = batch["loc"]
        location = batch["location"]
        j = int(location[0])
        if not bool((location == j).all()):
            raise ValueError("a DrasCLR batch must hold one location (use LocationBatchSampler)")
        q = self._query(batch["query"], loc)
        with torch.no_grad():
            self.momentum_update()
            k = self._keys(batch["key"], loc)
        negs = self.queue[j].clone().detach().float()
        loss_local, acc = self._infonce(q, k, negs)
        stats = {"loss_local": loss_local.detach(), "acc_local": acc}
        loss = loss_local
        nb = batch.get("neighbours")
        if nb is not None and nb.shape[1] > 0 and self.beta > 0:
            b, kn = nb.shape[:2]
            r = self._query(nb.flatten(0, 1), batch["neighbour_loc"].reshape(b * kn, -1))
            s = r.view(b, kn, -1).sum(1)
            loss_nb, acc_nb = self._infonce(s, k, negs)
            loss = loss + self.beta * loss_nb
            stats.update(loss_neighbour=loss_nb.detach(), acc_neighbour=acc_nb)
        self.enqueue(D.all_gather(k), j)
        stats["loss"] = loss.detach()
        return loss, stats
