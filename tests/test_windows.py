import pytest
import torch

from fmashard.data.transforms import RandomCrop
from fmashard.data.windows import WindowSpec, decode, make_windows, samples_needed


def pcm(batch, length, seed=0):
    return torch.randint(-32768, 32767, (batch, length), dtype=torch.int16,
                         generator=torch.Generator().manual_seed(seed))


def test_notebook_defaults():
    window = WindowSpec()
    assert (window.window, window.hop, window.count) == (110_250, 82_688, 7)  # 110250 - int(0.25 * 110250)
    assert window.span() <= 661_500


def test_decode_scales_int16_to_unit_range():
    x = torch.tensor([[-32768, 0, 16384, 32767]], dtype=torch.int16)
    assert decode(x).tolist() == [[-1.0, 0.0, 0.5, 32767 / 32768]]
    assert decode(x.to(torch.float16)).dtype == torch.float32


@pytest.mark.parametrize("batch,length,window,overlap,count", [
    (1, 661_500, 110_250, 0.25, 7), (3, 5_000, 1_000, 0.5, 9), (2, 4_000, 4_000, 0.0, 1)])
def test_windows_equal_slicing_the_waveform(batch, length, window, overlap, count):
    audio, labels = pcm(batch, length), torch.arange(batch)
    geometry = WindowSpec(window=window, overlap=overlap, count=count)
    windows, wlabels, wids = make_windows(audio, labels, geometry, track_ids=labels + 100)
    assert windows.shape == (batch * count, 1, window) and windows.dtype == torch.float32
    for b in range(batch):
        for w in range(count):
            expected = audio[b, w * geometry.hop: w * geometry.hop + window].float() / 32768
            assert torch.equal(windows[b * count + w, 0], expected)
    assert wlabels.tolist() == [b for b in range(batch) for _ in range(count)]
    assert wids.tolist() == [b + 100 for b in range(batch) for _ in range(count)]


def test_random_crop_is_seeded_and_slices_real_windows():
    audio = pcm(2, 3_000)
    window, crop = WindowSpec(window=500, count=4), RandomCrop()
    w1, _ = make_windows(audio, torch.zeros(2), window, torch.Generator().manual_seed(7), crop=crop)
    w2, _ = make_windows(audio, torch.zeros(2), window, torch.Generator().manual_seed(7), crop=crop)
    w3, _ = make_windows(audio, torch.zeros(2), window, torch.Generator().manual_seed(8), crop=crop)
    assert torch.equal(w1, w2) and not torch.equal(w1, w3)
    flat = audio.float() / 32768
    for i, win in enumerate(w1[:, 0]):
        row = flat[i // 4]
        starts = [s for s in range(3_000 - 500 + 1) if torch.equal(row[s:s + 500], win)]
        assert starts, f"window {i} is not a slice of its track"


def test_too_short_clip_is_refused():
    window = WindowSpec(window=600, overlap=0.0, count=2)
    with pytest.raises(ValueError, match="shorter than 2 windows need"):
        make_windows(pcm(1, 1000), torch.zeros(1), window)
    assert samples_needed(window) == 1200 and samples_needed(window, RandomCrop()) == 600
    windows, _ = make_windows(pcm(1, 1000), torch.zeros(1), window, torch.Generator(), crop=RandomCrop())
    assert windows.shape == (2, 1, 600)   # a crop needs one window's worth only
    with pytest.raises(ValueError, match="shorter than one window"):
        make_windows(pcm(1, 500), torch.zeros(1), window, torch.Generator(), crop=RandomCrop())
