"""The models: pinned sizes, shapes for other windows, a few bf16 training steps on CPU; the notebook's
waveform models, and MelCNN on the log-mel features (its input shape the features' for the window)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fmashard.data.features import feature_shape, make_features
from fmashard.errors import UserError
from fmashard.models import MODELS, MelCNN, SoundNet1D, SoundNet1DLarge, build_model, count_parameters, model_features

NAMES = [name for name in MODELS if model_features(name) == "wave"]   # the waveform models
NUM_CLASSES = 8
WINDOW = 110_250

# Regression pins for 8 classes and 110,250-sample windows: (parameters, classifier inputs).
PINNED = {
    "resnet1d": (2_605_448, 1024),  # without the notebook's unused layer3 (1,841,152 more)
    "soundnet": (6_212_809, 1401),
    "soundnet-large": (19_149_745, 599_628),  # 1401 channels x length 428
}
# The classifier sizes the notebook hard-codes, and a window for which they are right.
NOTEBOOK_CLASSIFIER = {
    "resnet1d": (110_250, 1024),
    "soundnet": (220_500, 2802),  # 10 s; 110,250 gives 1401
    "soundnet-large": (1_000, 1401),  # 908 to 1,163 samples only; 110,250 gives 599,628
}
# The shortest window each model accepts (one output step after the last layer).
MIN_WINDOW = {"resnet1d": 14_757, "soundnet": 56_798, "soundnet-large": 908}
# Another window for each model with a different classifier size (SoundNet1D gives 1401 up to 155,101).
OTHER_WINDOW = {"resnet1d": 66_150, "soundnet": 220_500, "soundnet-large": 66_150}


@pytest.mark.parametrize("name", NAMES)
def test_pinned_size_and_output_shape(name):
    torch.manual_seed(0)
    model = build_model(name, NUM_CLASSES)
    parameters, classifier_inputs = PINNED[name]
    assert count_parameters(model) == parameters
    assert model.fc.in_features == classifier_inputs
    with torch.no_grad():
        logits = model.eval()(torch.randn(2, 1, WINDOW))
    assert logits.shape == (2, NUM_CLASSES)
    assert logits.dtype == torch.float32


@pytest.mark.parametrize("name", NAMES)
def test_notebook_classifier_size(name):
    window, classifier_inputs = NOTEBOOK_CLASSIFIER[name]
    assert MODELS[name](NUM_CLASSES, window).fc.in_features == classifier_inputs


@pytest.mark.parametrize("name", NAMES)
def test_other_window_changes_classifier(name):
    window = OTHER_WINDOW[name]
    model = MODELS[name](NUM_CLASSES, window)
    assert model.fc.in_features != PINNED[name][1]
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, window)).shape == (2, NUM_CLASSES)


@pytest.mark.parametrize("name", NAMES)
def test_window_below_minimum_names_it(name):
    shortest = MIN_WINDOW[name]
    MODELS[name](NUM_CLASSES, shortest)
    with pytest.raises(ValueError, match=f"at least {shortest:,} samples"):
        MODELS[name](NUM_CLASSES, shortest - 1)
    with pytest.raises(UserError, match=f"at least {shortest:,} samples"):
        build_model(name, NUM_CLASSES, shortest - 1)


@pytest.mark.parametrize("name", NAMES)
def test_a_few_bf16_adam_steps_lower_the_loss(name):
    # Shortest window, two windows: bf16 convolutions are slow on CPUs without bf16 units.  (With four
    # random windows SoundNet1D's loss bounces back up after the first update: conv4 -> conv5 -> fc is
    # linear, so lr 1e-3 overshoots; with two it falls steadily.)
    torch.manual_seed(0)
    window = MIN_WINDOW[name]
    model = MODELS[name](NUM_CLASSES, window)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    waveforms, labels = torch.randn(2, 1, window), torch.tensor([0, 5])
    losses = []
    for step in range(3):  # two updates, then the loss they lead to
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(waveforms), labels)
        losses.append(loss.item())
        if step < 2:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < losses[0], losses


def test_unknown_model_names_the_valid_ones():
    with pytest.raises(UserError) as caught:
        build_model("nope", NUM_CLASSES)
    message = str(caught.value)
    assert "\n" not in message and "'nope'" in message
    assert all(name in message for name in MODELS)


def test_bad_arguments_and_inputs_are_value_errors():
    with pytest.raises(ValueError, match="num_classes"):
        SoundNet1DLarge(0, 1_000)
    with pytest.raises(ValueError, match="window_samples"):
        SoundNet1D(NUM_CLASSES, 0)
    with pytest.raises(UserError, match="num_classes"):
        build_model("soundnet", -1)
    model = SoundNet1DLarge(NUM_CLASSES, 1_000)
    with pytest.raises(ValueError, match=r"expects input \(N, 1, 1000\)"):
        model(torch.zeros(2, 1, 1_001))


# ----------------------------------------------------------------------------- melcnn (log-mel input)
MELCNN_PARAMETERS = 98_680   # 8 classes, any window: global pooling, the classifier takes 128 channels
MELCNN_MIN_WINDOW = 7_680    # 16 frames of hop 512: one left after four 2x2 pools


def test_registry_names_the_features_of_each_model():
    assert {name: model_features(name) for name in MODELS} == {
        "resnet1d": "wave", "soundnet": "wave", "soundnet-large": "wave", "melcnn": "logmel"}
    with pytest.raises(UserError, match="unknown model 'nope'"):
        model_features("nope")


def test_melcnn_pinned_size_and_output_shape():
    torch.manual_seed(0)
    model = build_model("melcnn", NUM_CLASSES)
    assert isinstance(model, MelCNN) and count_parameters(model) == MELCNN_PARAMETERS
    assert model.fc.in_features == 128 and model.input_shape == (1, 128, 216)
    with torch.no_grad():
        logits = model.eval()(torch.randn(2, *model.input_shape))
    assert logits.shape == (2, NUM_CLASSES) and logits.dtype == torch.float32


@pytest.mark.parametrize("window", [MELCNN_MIN_WINDOW, 22_050, WINDOW, 220_500])
def test_melcnn_input_is_the_log_mel_shape_of_the_window(window):
    model = MODELS["melcnn"](NUM_CLASSES, window)
    assert model.input_shape == feature_shape("logmel", window)
    assert count_parameters(model) == MELCNN_PARAMETERS
    with torch.no_grad():
        features = make_features("logmel")(torch.randn(2, 1, window))
        assert model.eval()(features).shape == (2, NUM_CLASSES)


def test_melcnn_window_below_minimum_names_it():
    MelCNN(NUM_CLASSES, MELCNN_MIN_WINDOW)
    with pytest.raises(ValueError, match=f"at least {MELCNN_MIN_WINDOW:,} samples"):
        MelCNN(NUM_CLASSES, MELCNN_MIN_WINDOW - 1)
    with pytest.raises(UserError, match=f"at least {MELCNN_MIN_WINDOW:,} samples"):
        build_model("melcnn", NUM_CLASSES, MELCNN_MIN_WINDOW - 1)


def test_melcnn_refuses_waveforms_with_a_clear_message():
    model = MelCNN(NUM_CLASSES, 22_050)
    with pytest.raises(ValueError, match=r"expects log-mel input \(N, 1, 128, 44\), got \(2, 1, 22050\)"):
        model(torch.zeros(2, 1, 22_050))


def test_melcnn_a_few_bf16_adam_steps_lower_the_loss():
    torch.manual_seed(0)
    model = MelCNN(NUM_CLASSES, MELCNN_MIN_WINDOW)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    features, labels = torch.randn(4, *model.input_shape) * 20 - 40, torch.tensor([0, 5, 2, 7])
    losses = []
    for step in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(features), labels)
        losses.append(loss.item())
        if step < 2:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0], losses


def test_melcnn_learns_low_from_high_tones():
    """Two classes a log-mel model must tell apart (a 200 Hz and a 3 kHz tone at random phases and levels
    over 40 dB): ten Adam steps on the features of the shortest window separate them, and so does the
    evaluation-mode model once its BatchNorm statistics are re-estimated (as --precise-bn does)."""
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(MELCNN_MIN_WINDOW) / 22_050
    labels = torch.tensor([0, 1] * 8)
    phase = torch.rand(16, 1, generator=generator) * 6.3
    level = 10 ** (-torch.rand(16, 1, generator=generator) * 2)
    freq = torch.where(labels == 0, 200.0, 3_000.0).view(-1, 1)
    features = make_features("logmel")((level * torch.sin(2 * torch.pi * freq * t + phase)).unsqueeze(1))
    torch.manual_seed(0)
    model = MelCNN(2, MELCNN_MIN_WINDOW)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        loss = F.cross_entropy(model(features), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 < losses[0], losses
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None    # a cumulative average over the passes below
    with torch.no_grad():
        model(features)
        accuracy = (model.eval()(features).argmax(1) == labels).float().mean()
    assert accuracy == 1.0, float(accuracy)
