//! Trains a character-level language model from scratch on a few public-domain paragraphs embedded
//! below: Embedding → LSTM → Linear → cross-entropy, with AdamW, linear warmup/decay and gradient
//! clipping. No downloads; deterministic for a fixed seed.
//!
//!     cargo run --release -p engine --example demo [-- --steps N --seed S]
use engine::nn::{prefixed, Dropout, Embedding, Linear, Lstm, LstmConfig, Module};
use engine::optim::{clip_grad_norm, AdamW, LrSchedule};
use engine::random::Rng;
use engine::{no_grad, Result, Tensor};
use std::time::Instant;

/// Public-domain texts: Lincoln's Gettysburg Address (1863), and the openings of Dickens's
/// "A Tale of Two Cities" (1859), Austen's "Pride and Prejudice" (1813), Carroll's "Alice's
/// Adventures in Wonderland" (1865) and Melville's "Moby-Dick" (1851).
const TEXT: &str = "\
Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived \
in Liberty, and dedicated to the proposition that all men are created equal. Now we are engaged in a \
great civil war, testing whether that nation, or any nation so conceived and so dedicated, can long \
endure. We are met on a great battle-field of that war. We have come to dedicate a portion of that \
field, as a final resting place for those who here gave their lives that that nation might live. It \
is altogether fitting and proper that we should do this. But, in a larger sense, we can not \
dedicate, we can not consecrate, we can not hallow this ground. The brave men, living and dead, who \
struggled here, have consecrated it, far above our poor power to add or detract. The world will \
little note, nor long remember what we say here, but it can never forget what they did here. It is \
for us the living, rather, to be dedicated here to the unfinished work which they who fought here \
have thus far so nobly advanced. It is rather for us to be here dedicated to the great task \
remaining before us, that from these honored dead we take increased devotion to that cause for \
which they gave the last full measure of devotion, that we here highly resolve that these dead shall \
not have died in vain, that this nation, under God, shall have a new birth of freedom, and that \
government of the people, by the people, for the people, shall not perish from the earth. \
It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of \
foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of \
Light, it was the season of Darkness, it was the spring of hope, it was the winter of despair, we \
had everything before us, we had nothing before us, we were all going direct to Heaven, we were all \
going direct the other way, in short, the period was so far like the present period, that some of \
its noisiest authorities insisted on its being received, for good or for evil, in the superlative \
degree of comparison only. There were a king with a large jaw and a queen with a plain face, on the \
throne of England; there were a king with a large jaw and a queen with a fair face, on the throne of \
France. In both countries it was clearer than crystal to the lords of the State preserves of loaves \
and fishes, that things in general were settled for ever. \
It is a truth universally acknowledged, that a single man in possession of a good fortune, must be \
in want of a wife. However little known the feelings or views of such a man may be on his first \
entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that \
he is considered the rightful property of some one or other of their daughters. My dear Mr. Bennet, \
said his lady to him one day, have you heard that Netherfield Park is let at last? Mr. Bennet \
replied that he had not. But it is, returned she; for Mrs. Long has just been here, and she told me \
all about it. Mr. Bennet made no answer. Do you not want to know who has taken it? cried his wife \
impatiently. You want to tell me, and I have no objection to hearing it. This was invitation enough. \
Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to \
do: once or twice she had peeped into the book her sister was reading, but it had no pictures or \
conversations in it, and what is the use of a book, thought Alice, without pictures or \
conversations? So she was considering in her own mind (as well as she could, for the hot day made \
her feel very sleepy and stupid), whether the pleasure of making a daisy-chain would be worth the \
trouble of getting up and picking the daisies, when suddenly a White Rabbit with pink eyes ran close \
by her. There was nothing so very remarkable in that; nor did Alice think it so very much out of the \
way to hear the Rabbit say to itself, Oh dear! Oh dear! I shall be late! But when the Rabbit \
actually took a watch out of its waistcoat-pocket, and looked at it, and then hurried on, Alice \
started to her feet, for it flashed across her mind that she had never before seen a rabbit with \
either a waistcoat-pocket, or a watch to take out of it, and burning with curiosity, she ran across \
the field after it, and fortunately was just in time to see it pop down a large rabbit-hole under \
the hedge. In another moment down went Alice after it, never once considering how in the world she \
was to get out again. \
Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my \
purse, and nothing particular to interest me on shore, I thought I would sail about a little and see \
the watery part of the world. It is a way I have of driving off the spleen and regulating the \
circulation. Whenever I find myself growing grim about the mouth; whenever it is a damp, drizzly \
November in my soul; whenever I find myself involuntarily pausing before coffin warehouses, and \
bringing up the rear of every funeral I meet; and especially whenever my hypos get such an upper \
hand of me, that it requires a strong moral principle to prevent me from deliberately stepping into \
the street, and methodically knocking people's hats off, then, I account it high time to get to sea \
as soon as I can. This is my substitute for pistol and ball. With a philosophical flourish Cato \
throws himself upon his sword; I quietly take to the ship. There is nothing surprising in this. If \
they but knew it, almost all men in their degree, some time or other, cherish very nearly the same \
feelings towards the ocean with me.";

struct Args {
    steps: u64,
    seed: u64,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = Args { steps: 600, seed: 1234 };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> std::result::Result<u64, String> {
            it.next().and_then(|v| v.parse().ok()).ok_or_else(|| format!("{name} needs a non-negative integer"))
        };
        match a.as_str() {
            "--steps" => args.steps = value("--steps")?.max(1),
            "--seed" => args.seed = value("--seed")?,
            other => return Err(format!("unknown argument {other} (expected --steps N, --seed S)")),
        }
    }
    Ok(args)
}

const DROPOUT: f32 = 0.3;

struct CharModel {
    embed: Embedding,
    lstm: Lstm,
    head: Linear,
    drop: Dropout,
}

impl CharModel {
    fn new(vocab: usize, seed: u64) -> Result<Self> {
        Ok(CharModel {
            embed: Embedding::new(vocab, 32, seed)?,
            lstm: Lstm::new(LstmConfig::new(32, 128).batch_first(true), seed + 1)?,
            head: Linear::new(128, vocab, true, seed + 2)?,
            drop: Dropout::new(DROPOUT, seed + 3)?,
        })
    }

    /// ids `[batch, seq]` → logits `[batch, seq, vocab]`; dropout on the LSTM's input and output
    /// when training.
    fn forward(&self, ids: &Tensor, train: bool) -> Result<Tensor> {
        let drop = |x: Tensor| if train { self.drop.forward(&x) } else { Ok(x) };
        let (h, _) = self.lstm.forward(&drop(self.embed.forward(ids)?)?, None)?;
        self.head.forward(&drop(h)?)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = prefixed("embed", self.embed.named_parameters());
        v.extend(prefixed("lstm", self.lstm.named_parameters()));
        v.extend(prefixed("head", self.head.named_parameters()));
        v
    }
}

/// Input ids `[batch, seq]` and next-char targets `[batch, seq]` from windows starting at `starts`.
fn batch(data: &[i64], starts: &[usize], seq: usize) -> Result<(Tensor, Tensor)> {
    let mut x = Vec::with_capacity(starts.len() * seq);
    let mut y = Vec::with_capacity(starts.len() * seq);
    for &s in starts {
        x.extend_from_slice(&data[s..s + seq]);
        y.extend_from_slice(&data[s + 1..s + seq + 1]);
    }
    Ok((Tensor::from_vec(x, &[starts.len(), seq])?, Tensor::from_vec(y, &[starts.len(), seq])?))
}

/// Next-char accuracy and mean loss over the windows of `data` (teacher forcing).
fn evaluate(model: &CharModel, data: &[i64], seq: usize) -> Result<(f32, f32)> {
    let _g = no_grad();
    let starts: Vec<usize> = (0..data.len().saturating_sub(seq + 1) / seq + 1).map(|k| k * seq).collect();
    let starts: Vec<usize> = starts.into_iter().filter(|&s| s + seq < data.len()).collect();
    let (x, y) = batch(data, &starts, seq)?;
    let logits = model.forward(&x, false)?;
    let loss = logits.cross_entropy(&y)?.to_scalar()?;
    let pred = logits.argmax(2, false)?.to_vec::<i64>()?;
    let hits = pred.iter().zip(y.to_vec::<i64>()?).filter(|(p, t)| **p == *t).count();
    Ok((hits as f32 / pred.len() as f32, loss))
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let t0 = Instant::now();

    // Vocabulary and a held-out split: every 10th block of 160 chars.
    let text: Vec<char> = TEXT.to_lowercase().chars().collect();
    let mut vocab: Vec<char> = text.clone();
    vocab.sort_unstable();
    vocab.dedup();
    let ids: Vec<i64> = text.iter().map(|c| vocab.binary_search(c).unwrap_or(0) as i64).collect();
    const BLOCK: usize = 160;
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for (k, block) in ids.chunks(BLOCK).enumerate() {
        if k % 10 == 9 {
            held.push(block.to_vec());
        } else {
            train.extend_from_slice(block);
        }
    }
    let held_ids: Vec<i64> = held.concat();

    // Baseline: always predict the most frequent training char.
    let mut counts = vec![0usize; vocab.len()];
    for &c in &train {
        counts[c as usize] += 1;
    }
    let top = (0..vocab.len()).max_by_key(|&c| counts[c]).unwrap_or(0);
    let baseline = held_ids.iter().filter(|&&c| c as usize == top).count() as f32 / held_ids.len() as f32;

    let model = CharModel::new(vocab.len(), args.seed)?;
    let named = model.named_parameters();
    let params: Vec<Tensor> = named.iter().map(|(_, t)| t.clone()).collect();
    let n_params: usize = params.iter().map(|p| p.numel()).sum();
    println!(
        "char-LSTM: {} chars ({} train / {} held out), vocab {}, {} parameters in {} tensors",
        text.len(),
        train.len(),
        held_ids.len(),
        vocab.len(),
        n_params,
        params.len()
    );

    let (seq, batch_size, base_lr, max_norm) = (48usize, 32usize, 1e-2f32, 1.0f32);
    let schedule = LrSchedule::linear(args.steps / 20, args.steps);
    let mut opt = AdamW::new(base_lr).with_weight_decay(0.01);
    let mut rng = Rng::new(args.seed ^ 0xda7a);
    let (mut first_loss, mut last_loss, mut avg) = (None, 0.0f32, 0.0f32);
    let every = (args.steps / 12).max(1);
    for step in 0..args.steps {
        let starts: Vec<usize> =
            (0..batch_size).map(|_| rng.next_below((train.len() - seq - 1) as u64) as usize).collect();
        let (x, y) = batch(&train, &starts, seq)?;
        let loss = model.forward(&x, true)?.cross_entropy(&y)?;
        let l = loss.to_scalar()?;
        let mut grads = loss.backward()?;
        let norm = clip_grad_norm(&mut grads, &params, max_norm)?;
        opt.lr = schedule.lr_at(base_lr, step);
        opt.step(&params, &grads)?;
        first_loss.get_or_insert(l);
        last_loss = l;
        avg = if step == 0 { l } else { 0.9 * avg + 0.1 * l };
        if step % every == 0 || step + 1 == args.steps {
            let (acc, hl) = evaluate(&model, &held_ids, 64)?;
            println!(
                "step {:>4}/{}  loss {l:.4}  (smoothed {avg:.4})  grad-norm {norm:>6.3}  lr {:.2e}  held-out loss {hl:.3} acc {:.1}%",
                step + 1,
                args.steps,
                opt.lr,
                100.0 * acc
            );
        }
    }
    let train_time = t0.elapsed().as_secs_f32();

    let (acc, held_loss) = evaluate(&model, &held_ids, 64)?;
    println!("loss: {:.4} → {last_loss:.4} (smoothed {avg:.4})", first_loss.unwrap_or(f32::NAN));
    println!("held-out next-char loss {held_loss:.4} (uniform guess would be {:.4})", (vocab.len() as f32).ln());
    println!(
        "held-out next-char accuracy {:.1}% vs {:.1}% for always guessing {:?}",
        100.0 * acc,
        100.0 * baseline,
        vocab[top]
    );

    // A greedy continuation, for a look at what it learned.
    let prompt = "it was the ";
    let mut ctx: Vec<i64> = prompt.chars().map(|c| vocab.binary_search(&c).unwrap_or(0) as i64).collect();
    {
        let _g = no_grad();
        for _ in 0..60 {
            let x = Tensor::from_vec(ctx.clone(), &[1, ctx.len()])?;
            let logits = model.forward(&x, false)?;
            let last = logits.narrow(1, ctx.len() - 1, 1)?.argmax(2, false)?.to_vec::<i64>()?;
            ctx.push(last[0]);
        }
    }
    let sample: String = ctx.iter().map(|&c| vocab[c as usize]).collect();
    println!("greedy sample: {sample:?}");
    println!("trained {} steps in {train_time:.1}s (total {:.1}s)", args.steps, t0.elapsed().as_secs_f32());
    Ok(())
}
