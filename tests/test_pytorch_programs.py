"""PyTorch programs run on ForgeML with only the import changed.

Each program below is written once, as a PyTorch user writes it, against a module named ``torch``; the test
runs it with ``torch`` and with ``forgeml`` bound to that name (nothing else differs), from the same initial
weights (PyTorch's, copied through the state_dict), and compares the losses of 20 training steps. The three
shapes are the ones the issue names: a tiny GPT with causal self-attention, weight tying and sampling; the
convolutional MNIST example with Adadelta and StepLR; and a word-level LSTM language model trained with the
hand-written SGD update on ``p.data`` and gradient clipping. Dropout is set to 0 where a program has it,
because the two frameworks draw different masks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import forgeml

torch_module = pytest.importorskip("torch")

STEPS = 20


def _copy_weights(theirs, ours) -> None:
    ours.load_state_dict({k: forgeml.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})


def _assert_same_losses(ours: list[float], theirs: list[float], rtol: float) -> None:
    assert len(ours) == len(theirs) == STEPS
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=1e-6)
    assert theirs[-1] < theirs[0]  # the program really trains


# --- a tiny GPT --------------------------------------------------------------------------------------------


def gpt_program(torch, vocab_size=29, block_size=16, n_embd=32, n_head=2, n_layer=2):
    nn = torch.nn
    F = torch.nn.functional

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(n_embd, 3 * n_embd)
            self.c_proj = nn.Linear(n_embd, n_embd)
            self.attn_dropout = nn.Dropout(0.0)
            self.register_buffer(
                "bias", torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size)
            )

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(n_embd, dim=2)
            q = q.view(B, T, n_head, C // n_head).transpose(1, 2)
            k = k.view(B, T, n_head, C // n_head).transpose(1, 2)
            v = v.view(B, T, n_head, C // n_head).transpose(1, 2)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
            att = self.attn_dropout(F.softmax(att, dim=-1))
            y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
            return self.c_proj(y)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(n_embd)
            self.attn = CausalSelfAttention()
            self.ln_2 = nn.LayerNorm(n_embd)
            self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict(
                dict(
                    wte=nn.Embedding(vocab_size, n_embd),
                    wpe=nn.Embedding(block_size, n_embd),
                    h=nn.ModuleList([Block() for _ in range(n_layer)]),
                    ln_f=nn.LayerNorm(n_embd),
                )
            )
            self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
            self.transformer.wte.weight = self.lm_head.weight
            self.apply(self._init_weights)

        def _init_weights(self, module):
            if isinstance(module, nn.Linear):
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

        def forward(self, idx, targets=None):
            _, t = idx.size()
            pos = torch.arange(0, t, dtype=torch.long)
            x = self.transformer.wte(idx) + self.transformer.wpe(pos)
            for block in self.transformer.h:
                x = block(x)
            logits = self.lm_head(self.transformer.ln_f(x))
            loss = None
            if targets is not None:
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
            return logits, loss

        @torch.no_grad()
        def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
            for _ in range(max_new_tokens):
                idx_cond = idx if idx.size(1) <= block_size else idx[:, -block_size:]
                logits, _ = self(idx_cond)
                logits = logits[:, -1, :] / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float("Inf")
                probs = F.softmax(logits, dim=-1)
                idx_next = torch.multinomial(probs, num_samples=1)
                idx = torch.cat((idx, idx_next), dim=1)
            return idx

    return GPT()


def gpt_train(torch, model, batches):
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    losses = []
    model.train()
    for xb, yb in batches:
        x, y = torch.tensor(xb), torch.tensor(yb)
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_tiny_gpt_trains_and_samples_as_in_pytorch():
    rng = np.random.default_rng(0)
    text = rng.integers(0, 29, size=4000)
    starts = rng.integers(0, len(text) - 17, size=(STEPS, 8))
    batches = [
        (np.stack([text[s : s + 16] for s in row]), np.stack([text[s + 1 : s + 17] for s in row])) for row in starts
    ]
    torch_module.manual_seed(0)
    theirs, ours = gpt_program(torch_module), gpt_program(forgeml)
    _copy_weights(theirs, ours)
    _assert_same_losses(gpt_train(forgeml, ours, batches), gpt_train(torch_module, theirs, batches), rtol=2e-4)

    ours.eval()
    theirs.eval()
    prompt = np.array([[1, 2, 3]])
    # top_k=1 makes sampling greedy: the same tokens in both frameworks
    greedy_ours = ours.generate(forgeml.tensor(prompt), 12, top_k=1).numpy()
    greedy_theirs = theirs.generate(torch_module.tensor(prompt), 12, top_k=1).numpy()
    np.testing.assert_array_equal(greedy_ours, greedy_theirs)
    forgeml.manual_seed(0)
    sampled = ours.generate(forgeml.tensor(prompt), 40, temperature=0.8, top_k=5).numpy()
    assert sampled.shape == (1, 43) and sampled.min() >= 0 and sampled.max() < 29
    np.testing.assert_array_equal(sampled[:, :3], prompt)


# --- the convolutional MNIST example ---------------------------------------------------------------------


def mnist_cnn_program(torch):
    nn = torch.nn
    F = torch.nn.functional

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, 1)
            self.conv2 = nn.Conv2d(32, 64, 3, 1)
            self.dropout1 = nn.Dropout(0.25)
            self.dropout2 = nn.Dropout(0.5)
            self.fc1 = nn.Linear(9216, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = self.conv1(x)
            x = F.relu(x)
            x = self.conv2(x)
            x = F.relu(x)
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = torch.flatten(x, 1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.dropout2(x)
            x = self.fc2(x)
            output = F.log_softmax(x, dim=1)
            return output

    return Net()


def mnist_cnn_train(torch, model, batches):
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    model.train()
    losses = []
    for i, (data, target) in enumerate(batches):
        data, target = torch.tensor(data), torch.tensor(target)
        optimizer.zero_grad()
        output = model(data)
        loss = torch.nn.functional.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if i % 5 == 4:  # an "epoch" of five batches
            scheduler.step()
    return losses


def test_mnist_cnn_with_adadelta_and_steplr_as_in_pytorch():
    from forgeml.data.datasets import MNIST

    digits = MNIST("train")
    rng = np.random.default_rng(1)
    picks = rng.choice(len(digits), size=(STEPS, 16), replace=False)
    images, labels = digits.data, digits.targets
    batches = []
    for row in picks:
        x = (np.asarray(images[row], dtype=np.float32).reshape(16, 1, 28, 28) / 255 - 0.1307) / 0.3081
        batches.append((x.astype(np.float32), np.asarray(labels[row], dtype=np.int64)))
    torch_module.manual_seed(0)
    theirs, ours = mnist_cnn_program(torch_module), mnist_cnn_program(forgeml)
    for model in (theirs, ours):
        model.dropout1.p = model.dropout2.p = 0.0
    _copy_weights(theirs, ours)
    _assert_same_losses(
        mnist_cnn_train(forgeml, ours, batches), mnist_cnn_train(torch_module, theirs, batches), rtol=2e-3
    )


# --- a word-level LSTM language model ---------------------------------------------------------------------


def lstm_lm_program(torch, ntoken=50, ninp=24, nhid=32, nlayers=2, dropout=0.0):
    nn = torch.nn

    class RNNModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(dropout)
            self.encoder = nn.Embedding(ntoken, ninp)
            self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
            self.decoder = nn.Linear(nhid, ntoken)
            self.init_weights()

        def init_weights(self):
            initrange = 0.1
            nn.init.uniform_(self.encoder.weight, -initrange, initrange)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -initrange, initrange)

        def forward(self, input, hidden):
            emb = self.drop(self.encoder(input))
            output, hidden = self.rnn(emb, hidden)
            output = self.drop(output)
            decoded = self.decoder(output).view(-1, ntoken)
            return torch.nn.functional.log_softmax(decoded, dim=1), hidden

        def init_hidden(self, bsz):
            weight = next(self.parameters())
            return (weight.new_zeros(nlayers, bsz, nhid), weight.new_zeros(nlayers, bsz, nhid))

    return RNNModel()


def repackage_hidden(torch, h):
    if isinstance(h, torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(torch, v) for v in h)


def lstm_lm_train(torch, model, train_data, bptt=12, lr=5.0, clip=0.25):
    criterion = torch.nn.NLLLoss()
    model.train()
    hidden = model.init_hidden(train_data.shape[1])
    data_all = torch.tensor(train_data)
    losses = []
    for i in range(0, bptt * STEPS, bptt):
        data, targets = data_all[i : i + bptt], data_all[i + 1 : i + 1 + bptt].reshape(-1)
        model.zero_grad()
        hidden = repackage_hidden(torch, hidden)
        output, hidden = model(data, hidden)
        loss = criterion(output, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
        losses.append(loss.item())
    return losses


def test_lstm_language_model_as_in_pytorch():
    rng = np.random.default_rng(2)
    # a corpus with structure to learn: a repeating pattern with noise, batchified into 10 columns
    pattern = rng.integers(0, 50, size=37)
    stream = np.where(rng.random(12 * STEPS * 10 + 20) < 0.8, np.resize(pattern, 12 * STEPS * 10 + 20), 7)
    train_data = stream[: (len(stream) // 10) * 10].reshape(10, -1).T.copy()
    torch_module.manual_seed(0)
    theirs, ours = lstm_lm_program(torch_module), lstm_lm_program(forgeml)
    _copy_weights(theirs, ours)
    _assert_same_losses(
        lstm_lm_train(forgeml, ours, train_data), lstm_lm_train(torch_module, theirs, train_data), rtol=1e-3
    )
