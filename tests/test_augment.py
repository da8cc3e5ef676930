"""Training augmentations on the device: RandomGain, RandomPolarity, Mixup (soft targets and their loss),
`parse_augment`; each changes training batches only and draws the same for the same (seed, epoch, batch)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fmashard.data.device import DeviceFeeder
from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.sources import resolve_source
from fmashard.data.targets import MixedLabels, soft_cross_entropy, soft_targets
from fmashard.data.transforms import (
    DeviceTransforms,
    Mixup,
    RandomCrop,
    RandomGain,
    RandomPolarity,
    batch_generator,
    parse_augment,
)
from fmashard.data.windows import WindowSpec, make_windows
from fmashard.errors import UserError
from synth_shards import VOCAB, write_synthetic_shards

WINDOW = WindowSpec(window=500, overlap=0.5, count=3)   # span 1000 of 3000-sample clips
CPU = torch.device("cpu")
ALL = dict(window_transforms=[RandomGain(6), RandomPolarity(0.5)], batch_transforms=[Mixup(0.2)])   # the roles


@pytest.fixture(scope="module")
def host_batches(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    write_synthetic_shards(root, [4, 3], clip_samples=3000)
    return list(ShardLoader(resolve_source(root), LoaderConfig(batch_size=3, shuffle=False, prefetch=0)))


def feed(batches, **kwargs):
    return list(DeviceFeeder(batches, CPU, WINDOW, **kwargs))


def track_factors(plain: torch.Tensor, augmented: torch.Tensor) -> torch.Tensor:
    """(B, W) ratio augmented / plain of each window (least squares), for a per-window scale."""
    a, b = plain.reshape(-1, WINDOW.count, WINDOW.window), augmented.reshape(-1, WINDOW.count, WINDOW.window)
    return (a * b).sum(-1) / (a * a).sum(-1)


def test_gain_scales_each_track_by_one_factor_within_the_range(host_batches):
    plain, gained = feed(host_batches), feed(host_batches, window_transforms=[RandomGain(6)], seed=1)
    factors = torch.cat([track_factors(p.windows, g.windows) for p, g in zip(plain, gained)])
    assert torch.allclose(factors, factors[:, :1].expand_as(factors), rtol=1e-5)   # all windows of a track alike
    db = 20 * torch.log10(factors[:, 0])
    assert db.abs().max() <= 6 + 1e-4 and db.std() > 1 and len(set(db.round(decimals=3).tolist())) == len(db)
    for p, g in zip(plain, gained):
        assert torch.equal(p.labels, g.labels) and torch.equal(p.track_ids, g.track_ids) and g.mix is None
        factor = track_factors(p.windows, g.windows)[:, :1]
        assert torch.allclose(g.windows.reshape(-1, WINDOW.count, WINDOW.window),
                              p.windows.reshape(-1, WINDOW.count, WINDOW.window) * factor[..., None], atol=1e-6)


@pytest.mark.parametrize("p, flipped", [(0.0, "none"), (1.0, "all"), (0.5, "some")])
def test_polarity_flips_whole_tracks(host_batches, p, flipped):
    plain, flips = feed(host_batches), feed(host_batches, window_transforms=[RandomPolarity(p)], seed=3)
    signs = torch.cat([track_factors(a.windows, b.windows) for a, b in zip(plain, flips)])
    assert torch.equal(signs, signs[:, :1].expand_as(signs)) and set(signs.flatten().tolist()) <= {-1.0, 1.0}
    negative = int((signs[:, 0] < 0).sum())
    assert {"none": negative == 0, "all": negative == len(signs), "some": 0 < negative < len(signs)}[flipped]


def test_mixup_mixes_tracks_and_labels_with_one_partner_and_weight_per_track(host_batches):
    plain, mixed = feed(host_batches), feed(host_batches, batch_transforms=[Mixup(0.4)], seed=5)
    partners_seen = 0
    for p, m in zip(plain, mixed):
        assert torch.equal(p.labels, m.labels) and torch.equal(p.track_ids, m.track_ids)   # hard labels kept
        count = p.num_tracks
        weight = m.mix.weight.reshape(count, WINDOW.count)
        partner_labels = m.mix.partner.reshape(count, WINDOW.count)
        assert torch.equal(weight, weight[:, :1].expand_as(weight)) and bool(((weight >= 0.5) & (weight <= 1)).all())
        assert torch.equal(partner_labels, partner_labels[:, :1].expand_as(partner_labels))
        own = p.windows.reshape(count, WINDOW.count, WINDOW.window)
        got = m.windows.reshape(count, WINDOW.count, WINDOW.window)
        for b in range(count):   # exactly one track of the batch is the partner: w * own + (1 - w) * partner
            w = float(weight[b, 0])
            candidates = [j for j in range(count)
                          if torch.allclose(got[b], w * own[b] + (1 - w) * own[j], atol=1e-6)]
            assert candidates, b
            assert any(int(p.labels[j * WINDOW.count]) == int(partner_labels[b, 0]) for j in candidates)
            partners_seen += any(j != b for j in candidates) and w < 0.999
    assert partners_seen > 0


def test_mixup_weights_are_beta_draws_folded_to_the_larger_share():
    weights = torch.cat([Mixup(0.2).draw(8, batch_generator(0, 0, i))[1] for i in range(100)])
    assert weights.min() >= 0.5 and weights.max() <= 1.0
    assert 0.85 < float(weights.mean()) < 0.95       # E[max(L, 1 - L)], L ~ Beta(0.2, 0.2): 0.906
    assert float(Mixup(4.0).draw(400, batch_generator(0, 0, 0))[1].mean()) < 0.7   # alpha 4: near even mixes


def test_a_batch_of_one_track_mixes_with_itself(host_batches):
    one = host_batches[-1]
    one = type(one)(one.audio[:1], one.labels[:1], one.track_ids[:1])
    plain, mixed = feed([one])[0], feed([one], batch_transforms=[Mixup(0.2)], seed=1)[0]
    assert torch.allclose(plain.windows, mixed.windows, atol=1e-6) and torch.equal(mixed.mix.partner, plain.labels)


def test_all_augmentations_draw_the_same_after_a_resume(host_batches):
    whole = feed(host_batches, **ALL, seed=3, epoch=1)
    resumed = feed(host_batches[1:], **ALL, seed=3, epoch=1, start_index=1)
    again = feed(host_batches, **ALL, seed=3, epoch=1)
    for a, b in zip(whole[1:], resumed):
        assert torch.equal(a.windows, b.windows)
        assert torch.equal(a.mix.partner, b.mix.partner) and torch.equal(a.mix.weight, b.mix.weight)
    assert all(torch.equal(a.windows, b.windows) for a, b in zip(whole, again))
    other_epoch = feed(host_batches, **ALL, seed=3, epoch=2)
    assert not torch.equal(whole[0].windows, other_epoch[0].windows)


def test_no_transforms_no_augmentation(host_batches):
    """What evaluation gets: the fixed windows, hard labels only."""
    batch = feed(host_batches)[0]
    audio = host_batches[0].audio
    want, _ = make_windows(audio, host_batches[0].labels, WINDOW)
    assert torch.equal(batch.windows, want) and batch.mix is None


def test_mixup_is_a_batch_transform_and_not_a_window_transform(host_batches):
    roles = DeviceTransforms(RandomCrop(), [RandomGain()], [Mixup()])
    assert roles.window_transforms[0].db == 6 and roles.batch_transforms[0].alpha == 0.2 and roles
    assert not DeviceTransforms() and DeviceTransforms().generator(0, 0, 0) is None
    with pytest.raises(ValueError, match=r"at most one label-mixing transform, got Mixup\(alpha=0.2\), Mixup"):
        DeviceTransforms(batch_transforms=[Mixup(), Mixup(0.4)])
    with pytest.raises(ValueError, match="at most one label-mixing transform"):
        DeviceFeeder(host_batches, CPU, WINDOW, batch_transforms=[Mixup(), Mixup(0.4)])
    with pytest.raises(TypeError, match="Mixup mixes the labels too"):
        make_windows(host_batches[0].audio, host_batches[0].labels, WINDOW, torch.Generator(),
                     window_transforms=[Mixup()])


def test_dali_path_augments_alike(tmp_path):
    pytest.importorskip("nvidia.dali", reason="nvidia-dali (extra 'dali') is not installed")
    from fmashard.data.dali import DaliLoader

    write_synthetic_shards(tmp_path, [4, 3], clip_samples=3000)
    spec = resolve_source(tmp_path)
    roles = dict(crop=RandomCrop(), **ALL)
    torch_path = feed(list(ShardLoader(spec, LoaderConfig(batch_size=3, shuffle=False, prefetch=0))), **roles,
                      seed=4)
    dali_path = list(DaliLoader(spec, WINDOW, batch_size=3, seed=4, **roles))
    assert len(torch_path) == len(dali_path) == 3
    for a, b in zip(torch_path, dali_path):
        assert torch.equal(a.windows, b.windows) and torch.equal(a.mix.partner, b.mix.partner)


# ----------------------------------------------------------------------------- the soft-target loss
def test_soft_cross_entropy_is_the_mix_of_the_two_cross_entropies():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(12, len(VOCAB), generator=generator)
    a = torch.randint(0, len(VOCAB), (12,), generator=generator)
    b = torch.randint(0, len(VOCAB), (12,), generator=generator)
    lam = 0.7
    mix = MixedLabels(b, torch.full((12,), lam))
    by_hand = lam * F.cross_entropy(logits, a) + (1 - lam) * F.cross_entropy(logits, b)
    assert torch.allclose(soft_cross_entropy(logits, a, mix), by_hand, atol=1e-6)
    weights = torch.rand(12, generator=generator) / 2 + 0.5                     # one weight per window
    mix = MixedLabels(b, weights)
    per_window = weights * F.cross_entropy(logits, a, reduction="none") + \
        (1 - weights) * F.cross_entropy(logits, b, reduction="none")
    assert torch.allclose(soft_cross_entropy(logits, a, mix), per_window.mean(), atol=1e-6)
    assert torch.allclose(F.cross_entropy(logits, soft_targets(a, len(VOCAB), mix)), per_window.mean(), atol=1e-6)
    assert torch.equal(soft_cross_entropy(logits, a), F.cross_entropy(logits, a))
    assert torch.equal(soft_targets(a, len(VOCAB)), F.one_hot(a, len(VOCAB)).float())


def test_soft_cross_entropy_trains_towards_the_mixed_target():
    logits = torch.zeros(1, 3, requires_grad=True)
    optimizer = torch.optim.SGD([logits], lr=1.0)
    mix = MixedLabels(torch.tensor([2]), torch.tensor([0.75]))
    for _ in range(200):
        optimizer.zero_grad()
        soft_cross_entropy(logits, torch.tensor([0]), mix).backward()
        optimizer.step()
    assert torch.allclose(logits.softmax(1), torch.tensor([[0.75, 0.0, 0.25]]), atol=0.02)


# ----------------------------------------------------------------------------- --augment
def test_parse_augment_gives_each_its_role_in_registry_order():
    got = parse_augment("mixup=0.3, polarity ,gain=4.5")
    assert [repr(t) for t in got.window_transforms] == ["RandomGain(db=4.5)", "RandomPolarity(p=0.5)"]
    assert [repr(t) for t in got.batch_transforms] == ["Mixup(alpha=0.3)"] and got.crop is None
    other = parse_augment("gain,polarity=0.25,mixup")
    assert [repr(t) for t in (*other.window_transforms, *other.batch_transforms)] == \
        ["RandomGain(db=6)", "RandomPolarity(p=0.25)", "Mixup(alpha=0.2)"]
    assert parse_augment("") == parse_augment("none") == parse_augment(None) == DeviceTransforms()


@pytest.mark.parametrize("text, message", [
    ("reverb", "augment: unknown augmentation 'reverb' in 'reverb' (known: gain[=DB],polarity[=P],mixup[=ALPHA])"),
    ("gain=loud", "augment: gain='loud' in 'gain=loud' is not a number"),
    ("gain=inf", "augment: gain='inf' in 'gain=inf' is not a number"),
    ("mixup=", "augment: mixup='' in 'mixup=' is not a number"),
    ("gain=-3", "augment: gain=-3: RandomGain: db must be a positive number, got -3.0"),
    ("polarity=1.5", "augment: polarity=1.5: RandomPolarity: p must be in [0, 1], got 1.5"),
    ("mixup=0", "augment: mixup=0: Mixup: alpha must be a positive number, got 0.0"),
    ("gain=3,gain=6", "augment: gain is given twice in 'gain=3,gain=6'"),
    ("gain,,mixup", "augment: unknown augmentation '' in 'gain,,mixup' (known: gain[=DB],polarity[=P],mixup[=ALPHA])"),
])
def test_parse_augment_errors_are_one_line_user_errors(text, message):
    with pytest.raises(UserError) as info:
        parse_augment(text)
    assert str(info.value) == message and "\n" not in message
