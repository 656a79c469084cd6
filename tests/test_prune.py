"""prune.py: exact counts, schedules, masks through AdamW and resume, N:M, Wanda, growth-aware scores, the CLI."""
import json
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import prune  # noqa: E402
from prune import (Pruner, average_density, balanced_scores, compute_masks, cubic_sparsity,  # noqa: E402
                   geometric_sparsity, magnitude_scores, n_pruned, nm_mask, wanda_scores)
from model import GPT, GPTConfig  # noqa: E402

ENV = dict(os.environ, OMP_NUM_THREADS='1')


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**dict(n_layer=2, n_head=2, n_embd=32, vocab_size=64, block_size=16), **kw}))


def pruned_counts(pruner):
    return {n: int((m == 0).sum()) for n, m in zip(pruner.names, pruner.masks)}


# ----------------------------------------------------------------------------- schedules
def test_schedules_equal_formulas():
    sf, si, t0, te, dt = 0.9, 0.1, 100, 1000, 50
    n = (te - t0) // dt
    for t in range(0, 1200, 7):
        if t < t0:
            assert cubic_sparsity(t, sf, t0, te, dt, si) == 0.0 and geometric_sparsity(t, sf, t0, te, dt) == 0.0
            continue
        k = min(n, (t - t0) // dt)  # the last event at or before t
        tk = t0 + k * dt
        assert cubic_sparsity(t, sf, t0, te, dt, si) == pytest.approx(sf + (si - sf) * (1 - (tk - t0) / (n * dt)) ** 3,
                                                                      abs=1e-12)
        # geometric: n + 1 events (t0 and te both count), each keeps (1 - s_f)^(1/(n+1)) of the survivors
        assert 1 - geometric_sparsity(t, sf, t0, te, dt) == pytest.approx((1 - sf) ** ((k + 1) / (n + 1)), rel=1e-12)
    p = 1 - (1 - sf) ** (1 / (n + 1))
    d = [1 - geometric_sparsity(t0 + k * dt, sf, t0, te, dt) for k in range(n + 1)]
    assert all(b / a == pytest.approx(1 - p, rel=1e-12) for a, b in zip([1.0] + d, d))
    assert cubic_sparsity(te, sf, t0, te, dt, si) == sf and geometric_sparsity(te + 5, sf, t0, te, dt) == sf
    assert cubic_sparsity(t0, sf, t0, te, dt, si) == si
    # prune_end not on the grid: the last event is prune_end itself
    assert [t for t in range(0, 40) if prune.is_event(t, 3, 20, 5)] == [3, 8, 13, 18, 20]
    assert cubic_sparsity(19, 0.5, 3, 20, 5) < 0.5 == cubic_sparsity(20, 0.5, 3, 20, 5)
    # off the grid the cubic is scaled by prune_end - prune_start (17), as TensorFlow Model Optimization's
    # PolynomialDecay does, not by n * prune_every (4 * 5 = 20)
    tf = 0.5 + (0.0 - 0.5) * (1 - (18 - 3) / (20 - 3)) ** 3
    assert cubic_sparsity(18, 0.5, 3, 20, 5) == pytest.approx(tf, abs=1e-15)
    assert abs(tf - (0.5 - 0.5 * (1 - 15 / 20) ** 3)) > 1e-3


def test_masks_never_revive():
    """A target below the sparsity already reached (a lowered final_sparsity, a schedule that asks for less)
    prunes nothing and brings nothing back: masks only go from 1 to 0."""
    torch.manual_seed(0)
    w = {'a': torch.randn(8, 8), 'b': torch.randn(4, 8)}
    first = compute_masks({k: v.abs() for k, v in w.items()}, 0.5)
    for scope in ('global', 'layer', 'row'):
        again = compute_masks({k: torch.rand_like(v) for k, v in w.items()}, 0.2, scope, masks=first)
        for k in w:
            assert torch.equal(again[k], first[k]), (scope, k)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    pruner = Pruner(model, 0.6, prune_start=0, prune_end=0, prune_every=1)
    pruner.step(0)
    kept = [m.clone() for m in pruner.masks]
    pruner.prune_to(0.1)  # a lower target
    with torch.no_grad():
        for p_ in model.parameters():
            p_.add_(1.0)  # every weight, pruned or not, moves away from 0
    pruner.step(1)  # re-zeroes the pruned ones
    assert all(torch.equal(a, b) for a, b in zip(kept, pruner.masks))
    assert pruner.stats()['sparsity'] == pytest.approx(0.6, abs=1 / 96)
    assert all(bool((w_[m == 0] == 0).all()) for w_, m in zip(pruner.weights, pruner.masks))


def test_journey_matters_card_average_density():
    """The 80% model card: 25,050 steps, pruning every 100 from 2,500 to 12,600, average density 0.3984.
    Convention: both the events at 2,500 and at 12,600 prune (102 events) -> 0.39924; the Pruner's running
    N_avg over a real run agrees with the formula to count rounding."""
    card = dict(final_sparsity=0.8, prune_start=2500, prune_end=12600, prune_every=100)
    avg = average_density(25050, prune_schedule='geometric', **card)
    assert abs(avg - 0.3984) < 0.002
    assert avg == pytest.approx(0.39924, abs=1e-5)
    model = tiny(n_layer=1, vocab_size=256, n_embd=64)  # 65,536 linear weights: rounding moves density < 1e-5
    pruner = Pruner(model, prune_schedule='geometric', **card)
    events = sum(pruner.step(t) for t in range(25050))
    st = pruner.stats()
    assert events == 102
    assert st['nonzero_linear'] == st['linear_params'] - n_pruned(0.8, st['linear_params'])
    assert st['avg_linear_params'] / st['linear_params'] == pytest.approx(avg, abs=2e-5)
    assert st['avg_density'] == st['avg_linear_params'] / st['linear_params']


# ----------------------------------------------------------------------------- exact counts
@pytest.mark.parametrize('scope', ['global', 'layer', 'row'])
def test_exact_final_sparsity(scope):
    """Weights rounded to a few values so that ties are everywhere: counts must still be exact at every event."""
    model = tiny()
    with torch.no_grad():
        for w in model.linear_weights().values():
            w.copy_((w * 20).round() / 20)
    sf = 0.7
    pruner = Pruner(model, sf, prune_start=2, prune_end=11, prune_every=3, prune_schedule='cubic', scope=scope)
    weights = model.linear_weights()
    total = sum(w.numel() for w in weights.values())
    for t in range(15):
        pruner.step(t)
        if pruner.masks is None:
            continue
        counts, s = pruned_counts(pruner), pruner.target(t)
        if scope == 'global':
            assert sum(counts.values()) == n_pruned(s, total), t
        elif scope == 'layer':
            assert counts == {n: n_pruned(s, w.numel()) for n, w in weights.items()}, t
        else:
            for n, m in zip(pruner.names, pruner.masks):
                assert ((m == 0).sum(1) == n_pruned(s, m.size(1))).all(), (t, n)
    assert pruner.target(14) == sf
    for n, m in zip(pruner.names, pruner.masks):  # the weights themselves are zero wherever masked
        assert bool((weights[n][m == 0] == 0).all()), n
    assert pruner.stats()['nonzero_linear'] == total - sum(pruned_counts(pruner).values())


def test_global_threshold_and_stable_ties():
    """Global scope prunes exactly the k smallest |w| over all layers; among equal scores the lower flat index."""
    a = torch.tensor([[0.5, 0.1, 0.3, 0.1]])
    b = torch.tensor([[0.1, 0.2], [0.9, 0.1]])
    keep = compute_masks({'a': a, 'b': b}, 0.5, 'global')  # 4 of 8 go: the four 0.1s
    assert keep['a'].tolist() == [[True, False, True, False]] and keep['b'].tolist() == [[False, True], [True, False]]
    keep = compute_masks({'a': a, 'b': b}, 3 / 8, 'global')  # 3 of the four tied 0.1s: the first three in order
    assert keep['a'].tolist() == [[True, False, True, False]] and keep['b'].tolist() == [[False, True], [True, True]]


# ----------------------------------------------------------------------------- through AdamW and resume
def train_steps(model, pruner, opt, steps, start, seed=0):
    g = torch.Generator().manual_seed(seed)
    history = []
    for t in range(start, start + steps):
        g.manual_seed(seed * 1000 + t)
        x = torch.randint(64, (4, 16), generator=g)
        _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        pruner.mask_grads()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        prev = None if pruner.masks is None else [m.clone() for m in pruner.masks]
        moved = None if prev is None else any(bool((w[m == 0] != 0).any()) for w, m in zip(pruner.weights, prev))
        pruner.step(t)
        history.append((loss.item(), moved))
        if prev is not None:  # masks only go 1 -> 0
            assert all(bool((m <= p).all()) for m, p in zip(pruner.masks, prev)), t
    return history


def test_pruned_weights_stay_zero_through_adamw():
    model = tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    pruner = Pruner(model, 0.6, prune_start=1, prune_end=7, prune_every=2, prune_schedule='geometric')
    history = train_steps(model, pruner, opt, 12, 0)
    for w, m in zip(pruner.weights, pruner.masks):
        assert bool((w[m == 0] == 0).all())
        assert w.grad is None or bool((w.grad[m == 0] == 0).all())
    # AdamW's momentum does move pruned weights off zero between events: the re-zeroing is what holds them
    assert any(moved for _, moved in history[3:])
    assert sum(pruned_counts(pruner).values()) == n_pruned(0.6, pruner.linear_params)


def test_mask_grads_zeroes_only_pruned():
    model = tiny()
    pruner = Pruner(model, 0.5, prune_start=0, prune_end=0, prune_every=1)
    pruner.step(0)
    x = torch.randint(64, (2, 16))
    model(x[:, :-1], x[:, 1:])[1].backward()
    grads = [w.grad.clone() for w in pruner.weights]
    pruner.mask_grads()
    for g0, w, m in zip(grads, pruner.weights, pruner.masks):
        assert torch.equal(w.grad, g0 * m) and bool((g0[m == 0] != 0).any())


def test_masks_survive_resume_in_process(tmp_path):
    """6 steps, state to disk, fresh model + optimizer + Pruner, 6 more == 12 straight: same losses and masks."""
    def fresh():
        model = tiny(seed=3)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
        return model, opt, Pruner(model, 0.75, prune_start=2, prune_end=9, prune_every=2, scope='layer')
    m1, o1, p1 = fresh()
    h1 = train_steps(m1, p1, o1, 12, 0)
    m2, o2, p2 = fresh()
    h2 = train_steps(m2, p2, o2, 6, 0)
    torch.save(dict(model=m2.state_dict(), opt=o2.state_dict(), pruner=p2.state_dict()), tmp_path / 'ck.pt')
    ck = torch.load(tmp_path / 'ck.pt', weights_only=True)
    assert all(m.dtype == torch.bool for m in ck['pruner']['masks'].values())
    m3, o3, p3 = fresh()
    m3.load_state_dict(ck['model'])
    o3.load_state_dict(ck['opt'])
    p3.load_state_dict(ck['pruner'])
    h3 = train_steps(m3, p3, o3, 6, 6)
    assert [l for l, _ in h2 + h3] == [l for l, _ in h1]
    assert all(torch.equal(a, b) for a, b in zip(p1.masks, p3.masks))
    assert p1.stats() == p3.stats()
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m3.state_dict()[k]), k


# ----------------------------------------------------------------------------- N:M
def test_nm_mask_keeps_largest_in_every_group():
    torch.manual_seed(0)
    s = torch.rand(6, 16)
    for n, m in [(2, 4), (1, 4), (3, 8)]:
        keep = nm_mask(s, n, m)
        groups, kg = s.view(-1, m), keep.view(-1, m)
        assert (kg.sum(1) == n).all()
        ref = torch.zeros_like(kg)
        ref.scatter_(1, groups.argsort(1, descending=True)[:, :n], True)
        assert torch.equal(kg, ref)


def test_gradual_2_4_pattern_in_every_group():
    model = tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    pruner = Pruner(model, 0.5, prune_start=0, prune_end=6, prune_every=3, pattern='2:4', prune_schedule='cubic')
    train_steps(model, pruner, opt, 8, 0)
    for n, w in model.linear_weights().items():
        nz = (w != 0).view(-1, 4).sum(1)
        assert (nz <= 2).all(), n
    for m in pruner.masks:
        assert ((m != 0).view(-1, 4).sum(1) == 2).all()


# ----------------------------------------------------------------------------- Wanda
def test_wanda_matches_reference():
    torch.manual_seed(0)
    lin = torch.nn.Linear(12, 5, bias=False)
    x = torch.randn(3, 7, 12) * torch.linspace(0.1, 3, 12)
    norms = prune.activation_norms(lin, ['weight'], [x])['weight']
    ref_norm = torch.sqrt((x.reshape(-1, 12).double() ** 2).sum(0))
    torch.testing.assert_close(norms.double(), ref_norm, rtol=1e-6, atol=0)
    keep = compute_masks({'w': wanda_scores(lin.weight, norms)}, 0.5, 'row')['w']
    w = lin.weight.detach().double()
    for i in range(5):  # per output row: the 6 smallest |W_ij| * ||X_j|| go
        sc = [abs(w[i, j].item()) * ref_norm[j].item() for j in range(12)]
        drop = sorted(range(12), key=lambda j: sc[j])[:6]
        assert keep[i].tolist() == [j not in drop for j in range(12)]


def test_wanda_one_shot_on_gpt_block_by_block():
    model = tiny()
    weights = model.linear_weights()
    x = torch.randint(64, (2, 16))
    # the first block's c_attn sees ln_1(wte(x)): its hooked norm equals the direct computation
    direct = model.transformer.h[0].ln_1(model.transformer.wte(x)).reshape(-1, 32).norm(dim=0)
    hooked = prune.activation_norms(model, ['transformer.h.0.attn.c_attn.weight'], [x])
    torch.testing.assert_close(hooked['transformer.h.0.attn.c_attn.weight'], direct.detach(), rtol=1e-5, atol=1e-6)
    prune.wanda_prune(model, weights, 0.5, None, [x])
    for n, w in weights.items():
        assert ((w == 0).sum(1) == w.size(1) // 2).all(), n


# ----------------------------------------------------------------------------- errors
def test_clear_errors():
    model = tiny()
    for s in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r'\[0, 1\)'):
            Pruner(model, s, 0, 10, 1)
        with pytest.raises(ValueError, match=r'\[0, 1\)'):
            compute_masks({'w': torch.rand(4, 4)}, s)
    with pytest.raises(ValueError, match='not a multiple of 8'):  # 36 inputs, groups of 8
        Pruner(tiny(n_embd=36, n_head=2), 0.75, 0, 10, 1, pattern='2:8')
    with pytest.raises(ValueError, match='multiple of 4'):
        nm_mask(torch.rand(4, 6), 2, 4)
    with pytest.raises(ValueError, match='no linear weights to prune'):
        Pruner(tiny(arch='gpt2', n_layer=0), 0.5, 0, 10, 1)  # no blocks, head tied to the embedding
    with pytest.raises(ValueError, match='no linear weights to prune'):
        Pruner(tiny(n_layer=0), 0.5, 0, 10, 1, prune_head=False)
    with pytest.raises(ValueError, match='final_sparsity=0.5'):
        Pruner(model, 0.7, 0, 10, 1, pattern='2:4')
    with pytest.raises(ValueError, match="'N:M'"):
        Pruner(model, 0.5, 0, 10, 1, pattern='4:2')
    with pytest.raises(ValueError, match='prune_end'):
        Pruner(model, 0.5, 10, 5, 1)
    with pytest.raises(ValueError, match='one-shot'):
        Pruner(model, 0.5, 0, 10, 1, score='wanda')
    with pytest.raises(ValueError, match='cubic'):
        Pruner(model, 0.5, 0, 10, 1, prune_schedule='linear')


def test_to_semi_structured_cpu_is_a_no_op():
    model = tiny()
    with torch.no_grad():
        for w in model.linear_weights().values():
            w.mul_(nm_mask(w.abs(), 2, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    if torch.cuda.is_available():
        pytest.skip('CPU contract only')
    assert prune.to_semi_structured(model) == []
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------- growth-aware
def grown_and_trained(method):
    """expand.py's function-preserving growth of a 2-layer model (width 32 -> 64, 2 -> 3 layers), then 20 AdamW
    steps, as a gradual-pruning run has before its first event. Returns the model, a map of each weight's new
    entries (rows/columns beyond the source's, and the whole of the new identity block), and the new block."""
    from expand import expand_model, layer_map
    src = tiny(seed=0, block_size=32)
    big = expand_model(src, n_embd=64, n_layer=3, method=method, seed=0)
    opt = torch.optim.AdamW(big.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        x = torch.randint(64, (8, 33), generator=g)
        big(x[:, :-1], x[:, 1:])[1].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    lmap, old = layer_map(2, 3), src.linear_weights()
    new = {}
    for name, w in big.linear_weights().items():
        r = torch.ones_like(w, dtype=torch.bool)
        if name.startswith('transformer.h.') and lmap[int(name.split('.')[2])] is None:
            new[name] = r  # an identity block: all new
            continue
        o = old[name if not name.startswith('transformer.h.') else
                name.replace(f".h.{name.split('.')[2]}.", f".h.{lmap[int(name.split('.')[2])]}.")]
        r[:o.shape[0], :o.shape[1]] = False
        new[name] = r
    return big, new, f'transformer.h.{lmap.index(None)}.'


@pytest.mark.parametrize('method', ['top_left', 'isotropic'])
def test_growth_aware_score_on_expanded_model(method):
    """50% global pruning right after growth + a little training. Plain magnitude removes the new identity
    block's output projections entirely (they started at 0), prunes top_left's new rows/columns far more than the
    old weights, and isotropic's /2-scaled readers more than the writers. The balanced (growth-aware) score
    keeps the new block alive and prunes old and new capacity, and every layer, at close to the same rate."""
    model, new, blk = grown_and_trained(method)
    weights = model.linear_weights()
    res = {}
    for name, fn in (('magnitude', magnitude_scores), ('balanced', balanced_scores)):
        keep = compute_masks({n: fn(w) for n, w in weights.items()}, 0.5, 'global')
        rate = lambda sel: sum(int((~keep[n])[sel(n)].sum()) for n in weights) / sum(int(sel(n).sum())
                                                                                     for n in weights)
        layer = {n: 1 - keep[n].float().mean().item() for n in weights if not n.startswith(blk)}
        res[name] = dict(new=rate(lambda n: new[n] & ~torch.tensor(n.startswith(blk))),
                         old=rate(lambda n: ~new[n]),
                         identity_proj=1 - (keep[blk + 'attn.c_proj.weight'].float().mean().item() +
                                            keep[blk + 'mlp.c_proj.weight'].float().mean().item()) / 2,
                         layer_spread=max(layer.values()) - min(layer.values()))
    mag, bal = res['magnitude'], res['balanced']
    assert mag['identity_proj'] > 0.99 and bal['identity_proj'] < 0.6, res
    if method == 'top_left':  # fresh rows, zero-started columns: new capacity goes first
        # rank-1 balancing cannot fully undo the writers' block structure (new rows x new columns): the gap
        # shrinks from ~0.36 to ~0.12 rather than to 0
        assert mag['new'] - mag['old'] > 0.3 and abs(bal['new'] - bal['old']) < 0.15, res
    else:  # copies split 1/2 over the residual: readers look half as important as writers
        assert mag['layer_spread'] > 0.15 and bal['layer_spread'] < 0.05, res


def test_balanced_score_ignores_row_and_column_scales():
    torch.manual_seed(0)
    w = torch.randn(24, 16)
    a, b = torch.rand(24) * 10 + 0.01, torch.rand(16) * 10 + 0.01
    torch.testing.assert_close(balanced_scores(a[:, None] * w * b[None, :], iters=30),
                               balanced_scores(w, iters=30), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- end to end: train.py and the CLI
TRAIN = ['--device=cpu', '--dtype=float32', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32',
         '--batch_size=4', '--eval_iters=2', '--log_interval=1', '--learning_rate=1e-2', '--min_lr=1e-3',
         '--warmup_iters=2', '--lr_decay_iters=8', '--weight_decay=0.1', '--eval_interval=4',
         '--final_sparsity=0.5', '--prune_start=1', '--prune_end=6', '--prune_every=1', '--prune_schedule=geometric']


def run(script, *args, check=True):
    r = subprocess.run([sys.executable, script, *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                       timeout=300)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def read_metrics(out_dir):
    with open(os.path.join(out_dir, 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope='module')
def trained(data_dir, tmp_path_factory):
    """8 iterations straight, and 4 + resume 4, with pruning events at iterations 1..6 (both halves)."""
    root = tmp_path_factory.mktemp('train')
    a, b = str(root / 'a'), str(root / 'b')
    run('train.py', *TRAIN, f'--data_dir={data_dir}', f'--out_dir={a}', '--max_iters=4')
    run('train.py', *TRAIN, f'--data_dir={data_dir}', f'--out_dir={a}', '--max_iters=8', '--init_from=resume')
    run('train.py', *TRAIN, f'--data_dir={data_dir}', f'--out_dir={b}', '--max_iters=8')
    return a, b


def test_train_exact_resume_with_pruning(trained):
    a, b = trained
    ma, mb = read_metrics(a), read_metrics(b)
    ta = {r['iter']: r['train_loss'] for r in ma if 'train_loss' in r}
    tb = {r['iter']: r['train_loss'] for r in mb if 'train_loss' in r}
    assert sorted(ta) == list(range(1, 9)) and ta == tb
    ea = [r for r in ma if 'val_loss' in r]
    assert ea == [r for r in mb if 'val_loss' in r]
    assert [r['iter'] for r in ea] == [0, 4, 8]
    ca, cb = (torch.load(os.path.join(d, 'ckpt.pt'), map_location='cpu', weights_only=True) for d in (a, b))
    assert set(ca['pruner']['masks']) == set(cb['pruner']['masks'])
    for n, m in cb['pruner']['masks'].items():
        assert m.dtype == torch.bool and torch.equal(ca['pruner']['masks'][n], m), n
        assert bool((cb['model'][n][~m] == 0).all())
    last = ea[-1]
    assert last['sparsity'] == pytest.approx(0.5, abs=1e-9) and last['target_sparsity'] == 0.5
    # iterations 0, 1 dense; after the event at iteration t (1..6) the density is 0.5^((t)/6); 7 is final
    dens = [1, 1] + [0.5 ** (t / 6) for t in range(1, 7)]
    assert last['avg_linear_params'] == pytest.approx(sum(dens) / 8 * last['linear_params'], rel=1e-3)
    assert ea[1]['sparsity'] == pytest.approx(1 - 0.5 ** (3 / 6), abs=1e-3)  # events 1, 2, 3 before iter 4


def test_cli_one_shot_from_checkpoint_and_dir(trained, data_dir, tmp_path):
    a, _ = trained
    out1 = str(tmp_path / 'p75')
    r = run('prune.py', f'--init_from={a}', f'--out_dir={out1}', '--sparsity=0.75', '--scope=layer',
            f'--data_dir={data_dir}', '--batch_size=2', '--eval_iters=2', '--block_size=32', '--device=cpu')
    assert 'val loss' in r.stdout and 'perplexity' in r.stdout and 'transformer.h.1.mlp.c_fc.weight' in r.stdout
    model = GPT.from_pretrained(out1)
    for n, w in model.linear_weights().items():
        assert int((w == 0).sum()) == n_pruned(0.75, w.numel()), n
    with open(os.path.join(out1, 'config.json')) as f:
        rec = json.load(f)['growing_sparse']['pruning'][-1]
    assert rec['scope'] == 'layer' and rec['source_iter_num'] == 8 and rec['achieved_sparsity'] == pytest.approx(
        0.75, abs=1e-3)
    assert rec['val_loss_after'] > rec['val_loss_before'] > 0
    # a model directory in, 2:4 Wanda out; the training checkpoint's 50% masks were not the 2:4 ones
    out2 = str(tmp_path / 'w24')
    run('prune.py', f'--init_from={out1}', f'--out_dir={out2}', '--sparsity=0.5', '--pattern=2:4', '--score=wanda',
        f'--data_dir={data_dir}', '--batch_size=2', '--calib_batches=2', '--eval_iters=1', '--block_size=32',
        '--device=cpu')
    model2 = GPT.from_pretrained(out2)
    for n, w in model2.linear_weights().items():
        assert ((w != 0).view(-1, 4).sum(1) <= 2).all(), n
    with open(os.path.join(out2, 'config.json')) as f:
        record = json.load(f)['growing_sparse']
    history = record['pruning']
    assert [h['score'] for h in history] == ['magnitude', 'wanda'] and history[1]['scope'] == 'row'
    from data.tokenizer import tokenizer_from_meta
    with open(os.path.join(data_dir, 'meta.json')) as f:  # the checkpoint's tokenizer travels with the model
        assert record['tokenizer'] == tokenizer_from_meta(json.load(f)).meta()
    assert os.path.exists(os.path.join(out2, 'tokenizer.json'))
    # bad input: one error line, nothing written
    r = run('prune.py', f'--init_from={out1}', f'--out_dir={out2}', check=False)
    assert r.returncode != 0 and 'not empty' in r.stderr
    out3 = str(tmp_path / 'bad')
    r = run('prune.py', f'--init_from={out1}', f'--out_dir={out3}', '--pattern=2:4', '--sparsity=0.6', check=False)
    assert r.returncode != 0 and '--sparsity=0.5' in r.stderr and not os.path.exists(out3)
