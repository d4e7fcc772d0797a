"""The task heads (gpt/heads.py) against Hugging Face's: GPT2ForSequenceClassification's logits and
loss for the same weights (with right padding too), GPT2DoubleHeadsModel's multiple-choice logits,
loading from our checkpoints, and saving and loading a head."""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_lite as tl
from gpt import GPT, GPTConfig
from gpt.checkpoint import CheckpointError, load_model, load_checkpoint, save_checkpoint
from gpt.heads import GPTForMultipleChoice, GPTForSequenceClassification, last_non_pad_index, mean_weights

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
# Loading the GPT-2 modules pulls in much of torch (seconds on a busy machine): here, at collection,
# not inside the first test's 30 s timeout.
from transformers import GPT2DoubleHeadsModel, GPT2ForSequenceClassification  # noqa: E402

VOCAB, PAD = 37, 0
HF_SETTINGS = dict(vocab_size=VOCAB, n_positions=12, n_embd=24, n_layer=2, n_head=2,
                   resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
                   bos_token_id=1, eos_token_id=1)


def randomise(hf) -> None:
    """Beyond the 0.02 init, so that every weight matters and the logits are far from uniform."""
    torch.manual_seed(0)
    with torch.no_grad():
        for param in hf.parameters():
            param.add_(torch.randn_like(param) * 0.2)


def padded_batch(rng, rows: int, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (rows, T) with real tokens in [1, VOCAB), each row right-padded with PAD; and the lengths."""
    lengths = rng.integers(1, T + 1, rows)
    lengths[0] = T  # one full row
    ids = rng.integers(1, VOCAB, (rows, T))
    ids[np.arange(T) >= lengths[:, None]] = PAD
    return ids, lengths


def test_last_non_pad_index_is_hugging_faces_rule():
    ids = np.array([[5, 6, 7, 0, 0], [5, 0, 7, 8, 9], [0, 0, 0, 0, 0], [0, 0, 4, 5, 0]])
    assert last_non_pad_index(ids, pad_token_id=0).tolist() == [2, 4, 0, 3]
    assert last_non_pad_index(ids[:1], pad_token_id=None).tolist() == [4]
    with pytest.raises(ValueError, match="pad_token_id"):
        last_non_pad_index(ids, pad_token_id=None)


@pytest.mark.parametrize("num_labels", [2, 5])
def test_sequence_classification_matches_hugging_face(num_labels, tmp_path):
    config = transformers.GPT2Config(**HF_SETTINGS, num_labels=num_labels, pad_token_id=PAD)
    hf = GPT2ForSequenceClassification(config).eval()
    randomise(hf)
    hf.save_pretrained(tmp_path, safe_serialization=True)

    ours = GPTForSequenceClassification.from_pretrained(tmp_path)
    assert ours.num_labels == num_labels and ours.pad_token_id == PAD
    assert ours.num_parameters() == hf.num_parameters()
    ids, lengths = padded_batch(np.random.default_rng(1), 6, 12)
    labels = np.arange(6) % num_labels
    attention_mask = torch.tensor((np.arange(12) < lengths[:, None]).astype(np.int64))
    with torch.no_grad():
        expected = hf(torch.tensor(ids), attention_mask=attention_mask, labels=torch.tensor(labels))
        without_mask = hf(torch.tensor(ids)).logits.numpy()
    logits, loss = ours(ids, labels=labels)
    assert logits.shape == (6, num_labels)
    np.testing.assert_allclose(logits.numpy(), expected.logits.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits.numpy(), without_mask, atol=1e-4, rtol=0)  # right padding: the same
    np.testing.assert_allclose(loss.item(), expected.loss.item(), atol=1e-5, rtol=1e-5)
    # how much padding follows the text changes nothing
    short = lengths <= 7
    fewer_pads, _ = ours(ids[short, :7])
    np.testing.assert_allclose(fewer_pads.numpy(), logits.numpy()[short], atol=1e-5, rtol=0)

def test_sequence_classification_gradient_reaches_body_and_head():
    tl.manual_seed(0)
    model = GPTForSequenceClassification(GPTConfig(vocab_size=VOCAB, block_size=8, n_layer=1, n_head=2,
                                                   n_embd=16), num_labels=3, pad_token_id=PAD)
    ids, _ = padded_batch(np.random.default_rng(0), 4, 8)
    _, loss = model(ids, labels=[0, 1, 2, 1])
    loss.backward()
    assert model.score.weight.shape == (3, 16) and model.score.bias is None
    assert np.abs(model.score.weight.grad.numpy()).sum() > 0
    assert np.abs(model.transformer.h[0].attn.c_attn.weight.grad.numpy()).sum() > 0
    with pytest.raises(ValueError, match="labels have shape"):
        model(ids, labels=[0, 1])
    with pytest.raises(ValueError, match="num_labels"):
        GPTForSequenceClassification(model.config, num_labels=1)


def test_mean_pooling_averages_the_real_positions_and_round_trips(tmp_path):
    """pooling="mean": logits = score(mean of hidden states 0 .. last real token), checked against the
    body's own hidden states; a pad-id token inside the text still counts; the choice is saved."""
    tl.manual_seed(0)
    config = GPTConfig(vocab_size=VOCAB, block_size=8, n_layer=1, n_head=2, n_embd=16)
    model = GPTForSequenceClassification(config, num_labels=3, pad_token_id=PAD, pooling="mean")
    ids = np.array([[5, 6, 7, 0, 0, 0], [5, PAD, 7, 8, 9, 4], [3, 0, 0, 0, 0, 0]])
    np.testing.assert_allclose(mean_weights(last_non_pad_index(ids, PAD), 6)[:, :, 0],
                               [[1 / 3] * 3 + [0] * 3, [1 / 6] * 6, [1] + [0] * 5], rtol=1e-6)
    hidden = model.transformer.hidden_states(ids).numpy()
    expected = np.stack([hidden[0, :3].mean(0), hidden[1].mean(0), hidden[2, :1].mean(0)]) @ model.score.weight.numpy().T
    logits, loss = model(ids, labels=[0, 1, 2])
    np.testing.assert_allclose(logits.numpy(), expected, atol=1e-5, rtol=0)
    last = GPTForSequenceClassification(config, num_labels=3, pad_token_id=PAD)
    last.load_state_dict(model.state_dict())
    assert np.abs(last(ids)[0].numpy() - logits.numpy()).max() > 1e-3  # the default reads one position
    loss.backward()
    assert np.abs(model.transformer.h[0].attn.c_attn.weight.grad.numpy()).sum() > 0
    model.save_pretrained(tmp_path, "best", tokenizer={"kind": "char", "chars": "ab"})
    again = GPTForSequenceClassification.from_pretrained(tmp_path)
    assert again.pooling == "mean"
    np.testing.assert_array_equal(again(ids)[0].numpy(), logits.numpy())
    with pytest.raises(ValueError, match="pooling must be one of"):
        GPTForSequenceClassification(config, num_labels=3, pooling="max")


def test_multiple_choice_matches_double_heads_model(tmp_path):
    config = transformers.GPT2Config(**HF_SETTINGS, pad_token_id=PAD)
    hf = GPT2DoubleHeadsModel(config).eval()
    randomise(hf)
    hf.save_pretrained(tmp_path, safe_serialization=True)

    ours = GPTForMultipleChoice.from_pretrained(tmp_path)
    B, num_choices, T = 3, 4, 12
    ids, lengths = padded_batch(np.random.default_rng(2), B * num_choices, T)
    ids, lengths = ids.reshape(B, num_choices, T), lengths.reshape(B, num_choices)
    labels = np.array([3, 0, 2])
    with torch.no_grad():
        expected = hf(torch.tensor(ids), mc_token_ids=torch.tensor(lengths - 1), mc_labels=torch.tensor(labels))
    logits, loss = ours(ids, labels=labels)  # finds the last real tokens itself
    assert logits.shape == (B, num_choices)
    np.testing.assert_allclose(logits.numpy(), expected.mc_logits.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(loss.item(), expected.mc_loss.item(), atol=1e-5, rtol=1e-5)
    explicit, _ = ours(ids, mc_token_ids=lengths - 1)
    np.testing.assert_array_equal(explicit.numpy(), logits.numpy())


def test_multiple_choice_loss_is_cross_entropy_over_choices():
    tl.manual_seed(0)
    model = GPTForMultipleChoice(GPTConfig(vocab_size=VOCAB, block_size=8, n_layer=1, n_head=2, n_embd=16),
                                 pad_token_id=PAD)
    ids, _ = padded_batch(np.random.default_rng(3), 10, 8)
    logits, loss = model(ids.reshape(2, 5, 8), labels=[4, 1])
    z = logits.numpy().astype(np.float64)
    log_probs = z - np.log(np.exp(z).sum(1, keepdims=True))
    np.testing.assert_allclose(loss.item(), -(log_probs[0, 4] + log_probs[1, 1]) / 2, rtol=1e-5)
    loss.backward()
    assert np.abs(model.multiple_choice_head.weight.grad.numpy()).sum() > 0
    with pytest.raises(ValueError, match="num_choices"):
        model(ids)


def save_base_gpt(out_dir, seed: int = 0) -> GPT:
    tl.manual_seed(seed)
    config = GPTConfig(vocab_size=VOCAB, block_size=8, n_layer=1, n_head=2, n_embd=16)
    base = GPT(config)
    save_checkpoint(out_dir, "best", model=base, model_config=config.to_dict(), tokenizer={"kind": "char",
                    "chars": "".join(chr(65 + i) for i in range(VOCAB))}, train_state={"iteration": 0})
    return base


def test_heads_from_our_base_checkpoint_and_round_trip(tmp_path):
    base = save_base_gpt(tmp_path / "base")
    ids, _ = padded_batch(np.random.default_rng(4), 3, 8)
    for head_class, kwargs in ((GPTForSequenceClassification, {"num_labels": 4}), (GPTForMultipleChoice, {})):
        model = head_class.from_pretrained(tmp_path / "base", pad_token_id=PAD, **kwargs)
        for name, value in base.state_dict().items():  # the body is the checkpoint's GPT
            np.testing.assert_array_equal(model.state_dict()[f"transformer.{name}"].numpy(), value.numpy())
        inputs = ids if head_class is GPTForSequenceClassification else ids[None]
        before = model(inputs)[0].numpy()
        out = tmp_path / head_class.task
        model.save_pretrained(out, "best", tokenizer={"kind": "char", "chars": "ab"})
        again = head_class.from_pretrained(out)
        assert again.pad_token_id == PAD
        np.testing.assert_array_equal(again(inputs)[0].numpy(), before)
        with pytest.raises(CheckpointError, match="head"):  # a head checkpoint is not a base GPT's
            load_model(load_checkpoint(out, "best"))
    with pytest.raises(CheckpointError, match="sequence_classification"):
        GPTForMultipleChoice.from_pretrained(tmp_path / "sequence_classification")
    with pytest.raises(ValueError, match="num_labels"):
        GPTForSequenceClassification.from_pretrained(tmp_path / "base")
