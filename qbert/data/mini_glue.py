"""Mini-GLUE: a small, deterministic, synthetic stand-in for the GLUE benchmark.

It writes the real GLUE directory layout and TSV formats (header rows, column orders,
label spaces as the GLUE download gives them and as fairseq's
``examples/roberta/preprocess_GLUE_tasks.sh`` reads them), so that everything a GLUE
user runs can be run and tested without downloading GLUE::

    OUT/CoLA/{train,dev,test}.tsv      (train/dev without header, 4 columns)
    OUT/SST-2/{train,dev,test}.tsv
    OUT/MRPC/{train,dev,test}.tsv
    OUT/STS-B/{train,dev,test}.tsv     (10 columns, score 0-5)
    OUT/QQP/{train,dev,test}.tsv
    OUT/MNLI/{train,dev_matched,dev_mismatched,test_matched,test_mismatched}.tsv
    OUT/QNLI/{train,dev,test}.tsv
    OUT/RTE/{train,dev,test}.tsv

Text is lower-cased and pre-tokenized (punctuation separated by spaces), so a
whitespace tokenizer suffices. Every task's label depends on *context*, not on a single
keyword (no token's presence predicts a label much better than the majority class):
negation scope and "but" clauses (SST-2), agreement across intervening phrases, word
order and argument structure (CoLA), overlap combined with negation / antonym / role /
attribute flips (RTE, MNLI), same content under reordering and synonyms vs. changed
content (MRPC; QQP: same intent and topic under different wordings), graded slot
overlap under synonyms and word order (STS-B), question type vs. answer type (QNLI).
A few percent of labels are flipped (MNLI: annotator disagreement; STS-B: score noise),
and some rarer rules (single-word changes, role swaps) are hard for a tiny model, so
no model reaches 100% and there is room to lose under quantization. Label spaces are
GLUE's; label balance is GLUE-like (MRPC 60% paraphrases, real: 68%).

It is not a benchmark of its own and must never be tuned to flatter a method.

Determinism: every (seed, task, split) has its own ``random.Random`` stream, so the same
arguments give byte-identical files, and changing ``--dev-size`` does not change train.

CLI::

    python -m qbert.data.mini_glue --out-dir DIR [--tasks SST-2,RTE] [--seed 1]
        [--train-size 8000 | --train-size glue [--max-train-size 8000]]
        [--dev-size 1000] [--test-size 500]
"""
from __future__ import annotations

import argparse
import os
import random
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .glue_tasks import TASK_NAMES, UnknownTaskError, get_task, parse_tasks
from .lexicon import Lexicon, rewrite_columns

DEFAULT_TRAIN_SIZE = 8000
DEFAULT_DEV_SIZE = 1000
DEFAULT_TEST_SIZE = 500
DEFAULT_SEED = 1
# The latent lexicon (qbert.data.lexicon): 0 aliases = off, the original mini-GLUE.
DEFAULT_ALIASES = 0
DEFAULT_ALIAS_PROB = 0.5
# Rows in the real GLUE train sets. ``--train-size glue`` uses these, capped at
# ``--max-train-size`` (default DEFAULT_TRAIN_SIZE): the small tasks keep GLUE's sizes
# (RTE 2490, MRPC 3668, STS-B 5749), where fine-tuning leans most on pretraining.
GLUE_TRAIN_SIZES = {"CoLA": 8551, "SST-2": 67349, "MRPC": 3668, "STS-B": 5749, "QQP": 363846,
                    "MNLI": 392702, "QNLI": 104743, "RTE": 2490}

# ----------------------------------------------------------------------------------------
# A tiny shared world
# ----------------------------------------------------------------------------------------

NAMES = ["anna", "ben", "carla", "david", "emma", "felix", "greta", "hugo", "irene", "jonas",
         "leo", "maria"]
# (base, past, participle, synonym of past/participle or None, antonym base or None)
THING_VERBS = [
    ("buy", "bought", "bought", "purchased", "sell"),
    ("sell", "sold", "sold", None, "buy"),
    ("find", "found", "found", "discovered", "lose"),
    ("lose", "lost", "lost", "misplaced", "find"),
    ("repair", "repaired", "repaired", "fixed", "break"),
    ("break", "broke", "broken", "damaged", "repair"),
    ("open", "opened", "opened", None, "close"),
    ("close", "closed", "closed", "shut", "open"),
    ("paint", "painted", "painted", "colored", None),
    ("clean", "cleaned", "cleaned", "washed", None),
    ("borrow", "borrowed", "borrowed", None, "lend"),
    ("lend", "lent", "lent", "loaned", "borrow"),
]
# person-person verbs (role swap changes the meaning)
PERSON_VERBS = [
    ("call", "called", "called", "phoned"),
    ("help", "helped", "helped", "assisted"),
    ("visit", "visited", "visited", None),
    ("pay", "paid", "paid", None),
    ("hire", "hired", "hired", "employed"),
    ("praise", "praised", "praised", "complimented"),
    ("blame", "blamed", "blamed", None),
    ("follow", "followed", "followed", None),
    ("thank", "thanked", "thanked", None),
    ("warn", "warned", "warned", "alerted"),
]
THINGS = ["car", "boat", "piano", "bicycle", "book", "lamp", "table", "guitar", "camera", "clock"]
COLORS = ["red", "blue", "green", "black", "white", "yellow"]
PLACES = ["paris", "london", "rome", "berlin", "madrid", "vienna", "oslo", "tokyo"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve"]

_VERB_BY_BASE = {v[0]: v for v in THING_VERBS}
# Debugging aid: set to a list to collect which rule made each RTE/MNLI/MRPC example
# (e.g. to see which phenomena a quantized model loses). Never affects the output.
_TRACE = None


def _a(np_: str) -> str:
    return ("an " if np_[0] in "aeiou" else "a ") + np_


def _pick(rng: random.Random, seq: Sequence, exclude=()):
    choices = [x for x in seq if x not in exclude]
    return rng.choice(choices)


def _maybe_flip(rng: random.Random, label, space: Sequence, rate: float):
    """Label noise: with probability ``rate`` replace ``label`` by another label."""
    if rng.random() < rate:
        return _pick(rng, space, exclude=(label,))
    return label


# ----------------------------------------------------------------------------------------
# SST-2: sentiment under negation scope and contrast
# ----------------------------------------------------------------------------------------

SST_POS = ["good", "great", "funny", "moving", "clever", "charming", "beautiful", "gripping",
           "delightful", "smart", "fresh", "wonderful"]
SST_NEG = ["bad", "boring", "dull", "silly", "clumsy", "awful", "tedious", "ugly", "bland",
           "painful", "weak", "messy"]
SST_SUBJ = ["the movie", "the film", "the plot", "the acting", "the script", "the ending",
            "the story", "the cast", "the music", "the dialogue", "the director 's work",
            "this picture", "the final act", "the premise", "the photography"]
SST_INTENS = ["very", "really", "quite", "truly", "rather", "so", "pretty"]
SST_NEGATORS = [("is", "is not"), ("was", "was not"), ("is", "is never"), ("was", "was hardly"),
                ("is", "is not at all"), ("feels", "never feels"), ("seems", "does not seem")]
SST_NEUTRAL_OPENERS = [
    "i did not expect much , but", "although i had not read the book ,",
    "we did not see the trailer , and", "i had never heard of it , but",
    "in the end", "to be honest ,", "after two hours ,",
]


def _sst_clause(rng: random.Random) -> Tuple[str, int]:
    """One clause and its polarity (1 positive, 0 negative)."""
    pos = rng.random() < 0.5
    adj = rng.choice(SST_POS if pos else SST_NEG)
    subj = rng.choice(SST_SUBJ)
    plain, negated = rng.choice(SST_NEGATORS)
    neg = rng.random() < 0.45
    verb = negated if neg else plain
    intens = (rng.choice(SST_INTENS) + " ") if rng.random() < 0.35 else ""
    polarity = int(pos) ^ int(neg)
    return f"{subj} {verb} {intens}{adj}", polarity


def _sst2_example(rng: random.Random) -> Tuple[str, int]:
    r = rng.random()
    if r < 0.5:
        text, label = _sst_clause(rng)
    elif r < 0.75:
        # contrast: the clause after "but" decides
        first, p1 = _sst_clause(rng)
        second, p2 = _sst_clause(rng)
        while p2 == p1 and rng.random() < 0.7:  # mostly contrasting polarities
            second, p2 = _sst_clause(rng)
        text, label = f"{first} , but {second}", p2
    else:
        # a negation outside the sentiment clause must not flip it
        opener = rng.choice(SST_NEUTRAL_OPENERS)
        clause, label = _sst_clause(rng)
        text = f"{opener} {clause}"
    return text + " .", label


def gen_sst2(rng: random.Random, n: int, split_kind: str) -> List[List[str]]:
    rows = []
    for i in range(n):
        text, label = _sst2_example(rng)
        label = _maybe_flip(rng, label, (0, 1), 0.05)
        if split_kind == "test":
            rows.append([str(i), text])
        else:
            # GLUE's SST-2 sentences end with a trailing space before the tab
            rows.append([text + " ", str(label)])
    return rows


# ----------------------------------------------------------------------------------------
# CoLA: agreement across intervening phrases, determiner agreement, word order
# ----------------------------------------------------------------------------------------

COLA_NOUNS = [("dog", "dogs"), ("cat", "cats"), ("teacher", "teachers"), ("child", "children"),
              ("student", "students"), ("farmer", "farmers"), ("bird", "birds"),
              ("doctor", "doctors"), ("girl", "girls"), ("boy", "boys"), ("writer", "writers"),
              ("neighbor", "neighbors")]
COLA_ADJ = ["old", "young", "tall", "happy", "tired", "clever", "small", "angry"]
COLA_IV = [("sleeps", "sleep"), ("runs", "run"), ("laughs", "laugh"), ("waits", "wait"),
           ("sings", "sing"), ("smiles", "smile")]
COLA_TV = [("sees", "see"), ("likes", "like"), ("chases", "chase"), ("helps", "help"),
           ("knows", "know"), ("finds", "find")]
COLA_ADV = ["quietly", "often", "today", "again", "outside", "slowly"]
COLA_PREP = ["near", "behind", "with", "beside"]
COLA_SOURCES = ["gj04", "bc01", "ad03", "c-05", "cj99", "ks08", "l-93", "m_02", "r-67",
                "sgww85", "sks13", "w_80"]
DET_SG = ["the", "a", "every", "this", "that"]
DET_PL = ["the", "some", "these", "those", "many"]


def _cola_np(rng: random.Random, plural: bool, adj_p=0.35) -> List[str]:
    sg, pl = rng.choice(COLA_NOUNS)
    det = rng.choice(DET_PL if plural else DET_SG)
    words = [det]
    if rng.random() < adj_p:
        words.append(rng.choice(COLA_ADJ))
    words.append(pl if plural else sg)
    return words


def _cola_sentence(rng: random.Random):
    """A grammatical sentence as a token list plus the structure needed to break it."""
    subj_pl = rng.random() < 0.5
    subj = _cola_np(rng, subj_pl)
    attractor: List[str] = []
    if rng.random() < 0.5:  # PP or relative clause between subject and verb
        att_pl = rng.random() < 0.5
        if rng.random() < 0.6:
            attractor = [rng.choice(COLA_PREP)] + _cola_np(rng, att_pl, adj_p=0.0)
        else:
            tv = rng.choice(COLA_TV)
            attractor = ["that"] + _cola_np(rng, att_pl, adj_p=0.0) + [tv[1] if att_pl else tv[0]]
    transitive = rng.random() < 0.5
    verbs = COLA_TV if transitive else COLA_IV
    v_sg, v_pl = rng.choice(verbs)
    verb = v_pl if subj_pl else v_sg
    obj = _cola_np(rng, rng.random() < 0.5) if transitive else []
    adv = [rng.choice(COLA_ADV)] if rng.random() < 0.4 else []
    return dict(subj=subj, subj_pl=subj_pl, attractor=attractor, verb=verb,
                verb_pair=(v_sg, v_pl), transitive=transitive, obj=obj, adv=adv)


def _cola_tokens(s) -> List[str]:
    return s["subj"] + s["attractor"] + [s["verb"]] + s["obj"] + s["adv"]


def _cola_break(rng: random.Random, s) -> List[str]:
    """Make the sentence ungrammatical; the error is never a single out-of-place keyword."""
    kind = rng.choice(["agree", "agree", "det", "order", "order", "argument"])
    if kind == "agree":
        v_sg, v_pl = s["verb_pair"]
        s = dict(s, verb=v_sg if s["subj_pl"] else v_pl)
        return _cola_tokens(s)
    if kind == "det":
        subj = list(s["subj"])
        subj[0] = rng.choice(DET_SG[1:] if s["subj_pl"] else DET_PL[2:])
        return _cola_tokens(dict(s, subj=subj))
    if kind == "order":
        choice = rng.random()
        if choice < 0.4:  # determiner after its noun: "dog the"
            subj = list(s["subj"])
            subj = subj[1:] + subj[:1]
            return _cola_tokens(dict(s, subj=subj))
        if choice < 0.7 and s["obj"]:  # object before the verb (SOV)
            return s["subj"] + s["attractor"] + s["obj"] + [s["verb"]] + s["adv"]
        # verb first
        return [s["verb"]] + s["subj"] + s["attractor"] + s["obj"] + s["adv"]
    # argument structure: transitive without object, intransitive with one
    if s["transitive"]:
        return s["subj"] + s["attractor"] + [s["verb"]] + s["adv"] + []
    obj = _cola_np(rng, rng.random() < 0.5)
    return s["subj"] + s["attractor"] + [s["verb"]] + obj + s["adv"]


def gen_cola(rng: random.Random, n: int, split_kind: str) -> List[List[str]]:
    rows = []
    for i in range(n):
        s = _cola_sentence(rng)
        good = rng.random() < 0.7  # CoLA is ~70% acceptable
        toks = _cola_tokens(s) if good else _cola_break(rng, s)
        if toks == _cola_tokens(s):
            good = True
        text = " ".join(toks) + " ."
        label = _maybe_flip(rng, int(good), (0, 1), 0.04)
        if split_kind == "test":
            rows.append([str(i), text])
        else:
            rows.append([rng.choice(COLA_SOURCES), str(label), "" if label else "*", text])
    return rows


# ----------------------------------------------------------------------------------------
# NLI world (RTE, MNLI): an event; hypotheses derived by rule
# ----------------------------------------------------------------------------------------


def _event(rng: random.Random) -> Dict:
    if rng.random() < 0.65:
        v = rng.choice(THING_VERBS)
        return dict(kind="thing", subj=rng.choice(NAMES), verb=v, obj=rng.choice(THINGS),
                    color=rng.choice(COLORS) if rng.random() < 0.6 else None,
                    place=rng.choice(PLACES) if rng.random() < 0.5 else None,
                    day=rng.choice(DAYS) if rng.random() < 0.4 else None,
                    neg=rng.random() < 0.2)
    v = rng.choice(PERSON_VERBS)
    subj = rng.choice(NAMES)
    return dict(kind="person", subj=subj, verb=v, obj=_pick(rng, NAMES, (subj,)), color=None,
                place=rng.choice(PLACES) if rng.random() < 0.5 else None,
                day=rng.choice(DAYS) if rng.random() < 0.4 else None,
                neg=rng.random() < 0.2)


def _obj_phrase(e, det: str, with_color=True) -> str:
    if e["kind"] == "person":
        return e["obj"]
    color = (e["color"] + " ") if (with_color and e["color"]) else ""
    return f"{det} {color}{e['obj']}"


def _render_event(rng: random.Random, e, passive: Optional[bool] = None, det="the",
                  with_color=True, with_adjuncts=True, synonym=False) -> str:
    base, past, part = e["verb"][0], e["verb"][1], e["verb"][2]
    syn = e["verb"][3]
    if synonym and syn and not e["neg"]:
        past = syn
        part = syn
    if passive is None:
        passive = rng.random() < 0.25
    obj = _obj_phrase(e, det, with_color)
    if passive:
        aux = "was not" if e["neg"] else "was"
        core = f"{obj} {aux} {part} by {e['subj']}"
    else:
        verb = f"did not {base}" if e["neg"] else past
        core = f"{e['subj']} {verb} {obj}"
    adj = []
    if with_adjuncts:
        if e["place"]:
            adj.append(f"in {e['place']}")
        if e["day"]:
            adj.append(f"on {e['day']}")
    rng.shuffle(adj)
    return " ".join([core] + adj)


def _premise(rng: random.Random, e) -> str:
    text = _render_event(rng, e, passive=rng.random() < 0.15, det="a" if rng.random() < 0.5 else "the")
    if rng.random() < 0.2:  # distractor clause about someone else
        other = _pick(rng, NAMES, (e["subj"], e["obj"]))
        text = f"{text} , while {other} {rng.choice(['stayed', 'waited'])} at home"
    return text + " ."


def _weighted(rng: random.Random, options: Dict[str, float]) -> str:
    names = [k for k, w in options.items() if w > 0]
    return rng.choices(names, weights=[options[k] for k in names])[0]


def _nli_pair(rng: random.Random, label: str, mismatched=False) -> Tuple[str, str]:
    """Premise/hypothesis pair whose relation is ``label`` in {entailment, neutral,
    contradiction}, by the rules of this toy world:
      entailment:    same event, maybe fewer details, synonym verb or passive voice
      contradiction: mostly the negation flipped; also an antonym verb, another colour
                     of the same thing, another place/day, or agent and patient swapped
      neutral:       mostly another event of the same agent (other verb and object);
                     also one other object/agent, or a detail the premise does not give
    Lexical overlap alone does not decide the label (negation flips and swaps keep it
    high); the rarer single-word cases are hard for a tiny model and leave headroom."""
    e = _event(rng)
    if mismatched:  # other genre: different adjunct distribution, more passive
        e["day"] = e["day"] or (rng.choice(DAYS) if rng.random() < 0.4 else None)
    prem = _premise(rng, e)
    h = dict(e)
    # A negated premise only licenses hypotheses that keep every detail
    # ("anna did not buy a red car" does not entail "anna did not buy the car").
    keep_details = e["neg"] or rng.random() < 0.5
    if not keep_details:
        h["place"] = h["place"] if rng.random() < 0.3 else None
        h["day"] = h["day"] if rng.random() < 0.3 else None
    with_color = keep_details or rng.random() < 0.5
    passive = rng.random() < (0.3 if mismatched else 0.2)
    synonym = rng.random() < 0.25
    thing, pos = e["kind"] == "thing", not e["neg"]

    if label == "entailment":
        op = "entail"
    elif label == "contradiction":
        # a negated premise is only contradicted by dropping the negation
        op = _weighted(rng, {
            "neg": 4.0,
            "antonym": 1.0 * (pos and thing and e["verb"][4] is not None),
            "swap": 2.0 * (pos and not thing),
            "color": 1.0 * (pos and thing and e["color"] is not None),
            "place": 0.5 * (pos and e["place"] is not None),
            "day": 0.5 * (pos and e["day"] is not None),
        })
        if op == "neg":
            h["neg"] = not e["neg"]
            synonym = False
        elif op == "antonym":
            h["verb"] = _VERB_BY_BASE[e["verb"][4]]
        elif op == "color":
            h["color"] = _pick(rng, COLORS, (e["color"],))
            with_color = True
        elif op == "place":
            h["place"] = _pick(rng, PLACES, (e["place"],))
        elif op == "day":
            h["day"] = _pick(rng, DAYS, (e["day"],))
        elif op == "swap":
            h["subj"], h["obj"] = e["obj"], e["subj"]
    else:  # neutral; adding a detail to a negated event would be entailed
        op = _weighted(rng, {
            "other_event": 4.0,
            "other_obj": 1.0,
            "other_subj": 1.0,
            "add_color": 1.0 * (pos and thing and e["color"] is None),
            "add_place": 0.5 * (pos and e["place"] is None),
            "add_day": 0.5 * (pos and e["day"] is None),
        })
        if op == "other_event":
            if thing:
                h["verb"] = _pick(rng, THING_VERBS, (e["verb"], _VERB_BY_BASE.get(e["verb"][4])))
                h["obj"] = _pick(rng, THINGS, (e["obj"],))
            else:
                h["verb"] = _pick(rng, PERSON_VERBS, (e["verb"],))
                h["obj"] = _pick(rng, NAMES, (e["obj"], e["subj"]))
        elif op == "other_obj":
            if thing:
                h["obj"] = _pick(rng, THINGS, (e["obj"],))
            else:
                h["obj"] = _pick(rng, NAMES, (e["obj"], e["subj"]))
        elif op == "other_subj":
            h["subj"] = _pick(rng, NAMES, (e["obj"], e["subj"]))
        elif op == "add_color":
            h["color"] = rng.choice(COLORS)
            with_color = True
        elif op == "add_place":
            h["place"] = rng.choice(PLACES)
        elif op == "add_day":
            h["day"] = rng.choice(DAYS)
    hyp = _render_event(rng, h, passive=passive, det="the", with_color=with_color,
                        synonym=synonym) + " ."
    if _TRACE is not None:
        _TRACE.append(op)
    return prem, hyp


def gen_rte(rng: random.Random, n: int, split_kind: str) -> List[List[str]]:
    rows = []
    for i in range(n):
        if rng.random() < 0.5:
            label = "entailment"
            prem, hyp = _nli_pair(rng, "entailment")
        else:
            label = "not_entailment"
            prem, hyp = _nli_pair(rng, rng.choice(["contradiction", "neutral"]))
        label = _maybe_flip(rng, label, ("entailment", "not_entailment"), 0.05)
        if split_kind == "test":
            rows.append([str(i), prem, hyp])
        else:
            rows.append([str(i), prem, hyp, label])
    return rows


MNLI_GENRES_MATCHED = ["fiction", "government", "slate", "telephone", "travel"]
MNLI_GENRES_MISMATCHED = ["facetoface", "letters", "nineeleven", "oup", "verbatim"]
MNLI_LABELS = ("entailment", "neutral", "contradiction")


def _binary_parse(text: str) -> str:
    toks = text.split()
    out = toks[-1]
    for t in reversed(toks[:-1]):
        out = f"( {t} {out} )"
    return f"( {out} )" if len(toks) == 1 else out


def _parse(text: str) -> str:
    leaves = " ".join(f"(X {t})" if t != "." else "(. .)" for t in text.split())
    return f"(ROOT (S {leaves}))"


def gen_mnli(rng: random.Random, n: int, split_kind: str, mismatched=False) -> List[List[str]]:
    genres = MNLI_GENRES_MISMATCHED if mismatched else MNLI_GENRES_MATCHED
    rows = []
    for i in range(n):
        gold = rng.choice(MNLI_LABELS)
        prem, hyp = _nli_pair(rng, gold, mismatched=mismatched)
        prompt = rng.randrange(10000, 150000)
        pair = f"{prompt}{rng.choice('enc')}"
        cols = [str(i), str(prompt), pair, rng.choice(genres), _binary_parse(prem),
                _binary_parse(hyp), _parse(prem), _parse(hyp), prem, hyp]
        if split_kind == "test":
            rows.append(cols)
        elif split_kind == "train":
            label = _maybe_flip(rng, gold, MNLI_LABELS, 0.06)
            rows.append(cols + [label, label])
        else:
            # five annotators; the gold label is the majority (ties go to the first).
            intended = _maybe_flip(rng, gold, MNLI_LABELS, 0.06)
            votes = [intended] + [_maybe_flip(rng, intended, MNLI_LABELS, 0.2) for _ in range(4)]
            counts = {lab: votes.count(lab) for lab in MNLI_LABELS}
            best = max(counts.values())
            gold_label = next(v for v in votes if counts[v] == best)
            rows.append(cols + votes + [gold_label])
    return rows


# ----------------------------------------------------------------------------------------
# QNLI: does the sentence answer the question? (answer-type match)
# ----------------------------------------------------------------------------------------


def _qnli_example(rng: random.Random, label: str) -> Tuple[str, str]:
    """Entailment iff the sentence is about the asked event *and* gives the asked kind of
    detail (a place for where, a day for when, a number for how many, the agent for who).
    Negatives mostly give other details of the same event, else the right kind of detail
    about another event."""
    v = rng.choice(THING_VERBS)
    subj = rng.choice(NAMES)
    thing = rng.choice(THINGS)
    qtype = rng.choice(["where", "when", "how_many", "who"])
    slots = {"place": rng.choice(PLACES), "day": rng.choice(DAYS), "num": rng.choice(NUMBERS)}
    need = {"where": "place", "when": "day", "how_many": "num", "who": "agent"}[qtype]

    if qtype == "where":
        q = f"where did {subj} {v[0]} the {thing}s ?"
    elif qtype == "when":
        q = f"when did {subj} {v[0]} the {thing}s ?"
    elif qtype == "how_many":
        q = f"how many {thing}s did {subj} {v[0]} ?"
    else:
        q = f"who {v[1]} the {thing}s in {slots['place']} ?"

    # which details the sentence gives
    present = {s for s in ("place", "day", "num") if rng.random() < 0.5}
    present.add("agent")
    s_subj, s_verb, s_thing = subj, v, thing
    if qtype == "who":
        present.add("place")
    if label == "entailment":
        present.add(need)
    else:
        mode = rng.choice(["missing", "missing", "other_event"])
        if mode == "missing":
            present.discard(need)
            if need != "agent":
                # make the sentence rich in other details so overlap stays high
                present |= {s for s in ("place", "day", "num") if s != need}
        else:
            # the right kind of detail, but about another event (two of agent, verb,
            # thing differ; the agent stays for "who" questions, whose answer it is)
            present.add(need)
            changed = rng.sample(["verb", "thing"] if qtype == "who" else ["verb", "thing", "subj"], 2)
            if "verb" in changed:
                s_verb = _pick(rng, THING_VERBS, (v,))
            if "thing" in changed:
                s_thing = _pick(rng, THINGS, (thing,))
            if "subj" in changed:
                s_subj = _pick(rng, NAMES, (subj,))
    num = slots["num"] if "num" in present else "the"
    obj = f"{num} {s_thing}s"
    adj = []
    if "place" in present:
        adj.append(f"in {slots['place']}")
    if "day" in present:
        adj.append(f"on {slots['day']}")
    rng.shuffle(adj)
    if "agent" in present:
        if rng.random() < 0.7:
            core = f"{s_subj} {s_verb[1]} {obj}"
        else:
            core = f"{obj} were {s_verb[2]} by {s_subj}"
    else:
        core = f"{obj} were {s_verb[2]}"
    sent = " ".join([core] + adj)
    if rng.random() < 0.3:
        sent = f"{sent} , and {_pick(rng, NAMES, (subj,))} {rng.choice(['was', 'felt'])} {rng.choice(['happy', 'surprised', 'tired'])}"  # noqa: E501
    return q, sent + " ."


def gen_qnli(rng: random.Random, n: int, split_kind: str) -> List[List[str]]:
    rows = []
    for i in range(n):
        label = "entailment" if rng.random() < 0.5 else "not_entailment"
        q, s = _qnli_example(rng, label)
        label = _maybe_flip(rng, label, ("entailment", "not_entailment"), 0.05)
        rows.append([str(i), q, s] if split_kind == "test" else [str(i), q, s, label])
    return rows


# ----------------------------------------------------------------------------------------
# MRPC: news sentences; paraphrase = same content under reordering/synonyms
# ----------------------------------------------------------------------------------------

COMPANIES = ["acme", "globex", "initech", "umbrella", "hooli", "vandelay", "soylent", "stark",
             "wayne", "tyrell", "cyberdyne", "wonka"]
MRPC_SAID = ["said", "reported", "announced", "stated"]
MRPC_METRIC = [("profit", "earnings"), ("sales", "revenue"), ("shares", "stock"),
               ("costs", "expenses"), ("orders", "bookings")]
MRPC_UP = ["rose", "increased", "climbed"]
MRPC_DOWN = ["fell", "dropped", "declined"]
MRPC_PERIODS = ["january", "march", "april", "june", "july", "september", "october", "december"]
MRPC_BUY = [("will buy", "will be bought by"), ("will acquire", "will be acquired by"),
            ("plans to purchase", "is to be purchased by")]


def _mrpc_fact(rng: random.Random) -> Dict:
    if rng.random() < 0.65:
        return dict(kind="change", co=rng.choice(COMPANIES), metric=rng.randrange(len(MRPC_METRIC)),
                    up=rng.random() < 0.5, num=rng.choice(NUMBERS), period=rng.choice(MRPC_PERIODS))
    a = rng.choice(COMPANIES)
    return dict(kind="deal", a=a, b=_pick(rng, COMPANIES, (a,)), how=rng.randrange(len(MRPC_BUY)),
                num=rng.choice(NUMBERS))


MRPC_SUFFIXES = ["analysts said", "officials said", "the company said on monday"]


def _mrpc_style(rng: random.Random) -> Dict:
    """Surface choices of one rendering: verb of saying, synonyms, word order, suffix."""
    return dict(said=rng.randrange(len(MRPC_SAID)), metric=rng.randrange(2), move=rng.randrange(len(MRPC_UP)),
                form=rng.randrange(3), passive=rng.random() < 0.5,
                suffix=rng.randrange(len(MRPC_SUFFIXES)) if rng.random() < 0.15 else None)


def _mrpc_restyle(rng: random.Random, style: Dict) -> Dict:
    """The second sentence re-words the first: each surface choice is redrawn with p=0.35."""
    other = _mrpc_style(rng)
    return {k: (other[k] if rng.random() < 0.35 else v) for k, v in style.items()}


def _mrpc_render(f: Dict, st: Dict) -> str:
    if f["kind"] == "change":
        said = MRPC_SAID[st["said"]]
        metric = MRPC_METRIC[f["metric"]][st["metric"]]
        move = (MRPC_UP if f["up"] else MRPC_DOWN)[st["move"]]
        core = f"its {metric} {move} {f['num']} percent"
        if st["form"] == 0:
            s = f"{f['co']} {said} {core} in {f['period']}"
        elif st["form"] == 1:
            s = f"in {f['period']} , {f['co']} {said} {core}"
        else:
            s = f"{core} in {f['period']} , {f['co']} {said}"
    else:
        active, passive = MRPC_BUY[f["how"]]
        price = f"for {f['num']} billion"
        if st["passive"]:
            s = f"{f['b']} {passive} {f['a']} {price}"
        else:
            s = f"{f['a']} {active} {f['b']} {price}"
    if st["suffix"] is not None:
        s = f"{s} , {MRPC_SUFFIXES[st['suffix']]}"
    return s + " ."


def _mrpc_change(rng: random.Random, f: Dict) -> Tuple[Dict, str]:
    """Another fact that shares many words with ``f``: mostly another news item of the
    same company (other figure, number and period) or another deal of the same buyer;
    also the direction flipped ("rose" vs "declined", under synonyms) or buyer and target
    exchanged; sometimes just one number, period or name (hard for a tiny model)."""
    g = dict(f)
    if f["kind"] == "change":
        op = _weighted(rng, {"other_item": 4.0, "direction": 1.5, "num": 0.3, "period": 0.3, "co": 0.3})
        if op == "direction":
            g["up"] = not f["up"]
        elif op == "other_item":
            g["metric"] = _pick(rng, range(len(MRPC_METRIC)), (f["metric"],))
            g["num"] = _pick(rng, NUMBERS, (f["num"],))
            g["period"] = _pick(rng, MRPC_PERIODS, (f["period"],))
        elif op == "num":
            g["num"] = _pick(rng, NUMBERS, (f["num"],))
        elif op == "period":
            g["period"] = _pick(rng, MRPC_PERIODS, (f["period"],))
        else:
            g["co"] = _pick(rng, COMPANIES, (f["co"],))
    else:
        op = _weighted(rng, {"other_deal": 2.5, "swap": 1.5, "num": 0.3})
        if op == "swap":  # same words, buyer and target exchanged
            g["a"], g["b"] = f["b"], f["a"]
        elif op == "other_deal":
            g["b"] = _pick(rng, COMPANIES, (f["a"], f["b"]))
            g["num"] = _pick(rng, NUMBERS, (f["num"],))
        else:
            g["num"] = _pick(rng, NUMBERS, (f["num"],))
    return g, op


def gen_mrpc(rng: random.Random, n: int, split_kind: str) -> List[List[str]]:
    rows = []
    for i in range(n):
        f = _mrpc_fact(rng)
        para = rng.random() < 0.6  # (real MRPC: ~68% paraphrases; 60% keeps the majority baseline lower)
        st1 = _mrpc_style(rng)
        st2 = _mrpc_restyle(rng, st1)
        s1 = _mrpc_render(f, st1)
        if para:
            s2, op = _mrpc_render(f, st2), "paraphrase"
        else:
            g, op = _mrpc_change(rng, f)
            s2 = _mrpc_render(g, st2)
        if _TRACE is not None:
            _TRACE.append(op)
        label = _maybe_flip(rng, int(para), (0, 1), 0.05)
        id1, id2 = rng.randrange(100000, 4000000), rng.randrange(100000, 4000000)
        if split_kind == "test":
            rows.append([str(i), str(id1), str(id2), s1, s2])
        else:
            rows.append([str(label), str(id1), str(id2), s1, s2])
    return rows


# ----------------------------------------------------------------------------------------
# QQP: question pairs; duplicate = same intent and same topic
# ----------------------------------------------------------------------------------------

QQP_TOPICS = ["python", "java", "guitar", "piano", "chess", "spanish", "french", "calculus",
              "photography", "swimming", "cooking", "drawing", "yoga", "economics"]
QQP_INTENTS = {
    "learn": ["how do i learn {t} ?", "what is the best way to learn {t} ?",
              "how can i get better at {t} ?", "how should a beginner start learning {t} ?"],
    "fast": ["how can i learn {t} quickly ?", "what is the fastest way to learn {t} ?",
             "how do i learn {t} in a month ?"],
    "worth": ["is learning {t} worth it ?", "should i spend time learning {t} ?",
              "is it worth it to study {t} ?"],
    "hard": ["why is {t} so hard ?", "what makes {t} so difficult ?",
             "why do people find {t} hard ?"],
    "job": ["can i get a job with {t} ?", "what jobs can i get if i know {t} ?",
            "is {t} useful for getting a job ?"],
}
_QQP_INTENT_NAMES = list(QQP_INTENTS)


def gen_qqp(rng: random.Random, n: int, split_kind: str) -> List[List[str]]:
    rows = []
    qid = [rng.randrange(1, 100000)]

    def next_qid():
        qid[0] += rng.randrange(1, 7)
        return qid[0]

    for i in range(n):
        intent = rng.choice(_QQP_INTENT_NAMES)
        topic = rng.choice(QQP_TOPICS)
        t1 = rng.choice(QQP_INTENTS[intent])
        dup = rng.random() < 0.37  # QQP is ~37% duplicates
        if dup:
            t2 = rng.choice(QQP_INTENTS[intent])
            topic2 = topic
        elif rng.random() < 0.5:
            # same wording family, different topic
            t2 = rng.choice(QQP_INTENTS[intent])
            topic2 = _pick(rng, QQP_TOPICS, (topic,))
        else:
            # same topic, different intent
            t2 = rng.choice(QQP_INTENTS[_pick(rng, _QQP_INTENT_NAMES, (intent,))])
            topic2 = topic
        q1, q2 = t1.format(t=topic), t2.format(t=topic2)
        if rng.random() < 0.5:
            q1, q2 = q2, q1
        label = _maybe_flip(rng, int(dup), (0, 1), 0.05)
        if split_kind == "test":
            rows.append([str(i), q1, q2])
        else:
            rows.append([str(rng.randrange(1, 400000)), str(next_qid()), str(next_qid()), q1, q2,
                         str(label)])
    return rows


# ----------------------------------------------------------------------------------------
# STS-B: similarity score from graded slot overlap (0-5)
# ----------------------------------------------------------------------------------------

STS_SUBJ = [("man", "guy"), ("woman", "lady"), ("dog", "puppy"), ("cat", "kitten"),
            ("boy", "kid"), ("girl", "child"), ("player", "athlete"), ("cook", "chef")]
STS_ADJ = ["young", "tall", "small", "happy", "old", "brown"]
STS_VERB = [("playing", "played"), ("eating", "eaten"), ("holding", "held"),
            ("carrying", "carried"), ("cutting", "cut"), ("throwing", "thrown"),
            ("watching", "watched"), ("pushing", "pushed")]
STS_OBJ = [("ball", "ball"), ("guitar", "guitar"), ("apple", "fruit"), ("box", "crate"),
           ("bottle", "bottle"), ("newspaper", "paper"), ("onion", "onion"), ("rope", "cord")]
STS_PLACE = ["in the park", "on the beach", "in the kitchen", "on the street",
             "in a field", "in the garden"]
STS_WEIGHTS = {"subj": 1.5, "verb": 1.5, "obj": 1.0, "adj": 0.5, "place": 0.5}  # sums to 5
STS_SOURCES = [("main-captions", "MSRvid", "2012test"), ("main-captions", "images", "2015"),
               ("main-news", "headlines", "2013"), ("main-forum", "deft-forum", "2014")]


def _sts_sentence(rng: random.Random, s: Dict, synonyms: bool) -> str:
    subj = STS_SUBJ[s["subj"]][1 if synonyms and rng.random() < 0.5 else 0]
    obj = STS_OBJ[s["obj"]][1 if synonyms and rng.random() < 0.5 else 0]
    ing = STS_VERB[s["verb"]][0]
    np_ = f"{STS_ADJ[s['adj']]} {subj}" if s["adj"] is not None else subj
    place = STS_PLACE[s["place"]]
    if rng.random() < 0.2:
        text = f"{place} , {_a(np_)} is {ing} {_a(obj)}"
    else:
        text = f"{_a(np_)} is {ing} {_a(obj)} {place}"
    return text + " ."


def gen_stsb(rng: random.Random, n: int, split_kind: str) -> List[List[str]]:
    rows = []
    for i in range(n):
        s1 = dict(subj=rng.randrange(len(STS_SUBJ)), verb=rng.randrange(len(STS_VERB)),
                  obj=rng.randrange(len(STS_OBJ)),
                  adj=rng.randrange(len(STS_ADJ)) if rng.random() < 0.7 else None,
                  place=rng.randrange(len(STS_PLACE)))
        k = rng.randrange(len(STS_WEIGHTS) + 1)  # how many slots are kept: uniform 0..5
        kept = set(rng.sample(sorted(STS_WEIGHTS), k))
        s2 = dict(s1)
        for slot in STS_WEIGHTS:
            if slot in kept:
                continue
            if slot == "adj":
                s2["adj"] = _pick(rng, range(len(STS_ADJ)), (s1["adj"],))
            else:
                pool = {"subj": STS_SUBJ, "verb": STS_VERB, "obj": STS_OBJ, "place": STS_PLACE}[slot]
                s2[slot] = _pick(rng, range(len(pool)), (s1[slot],))
        score = sum(STS_WEIGHTS[s] for s in kept) + rng.gauss(0.0, 0.35)
        score = min(5.0, max(0.0, score))
        a, b = _sts_sentence(rng, s1, False), _sts_sentence(rng, s2, True)
        if rng.random() < 0.5:
            a, b = b, a
        genre, fname, year = rng.choice(STS_SOURCES)
        cols = [str(i), genre, fname, year, f"{i + 1:04d}", "none", "none", a, b]
        rows.append(cols if split_kind == "test" else cols + [f"{score:.3f}"])
    return rows


# ----------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------

Gen = Callable[[random.Random, int, str], List[List[str]]]

GENERATORS: Dict[str, Gen] = {
    "CoLA": gen_cola,
    "SST-2": gen_sst2,
    "MRPC": gen_mrpc,
    "STS-B": gen_stsb,
    "QQP": gen_qqp,
    "MNLI": gen_mnli,
    "QNLI": gen_qnli,
    "RTE": gen_rte,
}
assert tuple(GENERATORS) == TASK_NAMES


# Words the generators make in code rather than list in a constant (plurals of THINGS, ...).
_CODE_WORDS = [t + "s" for t in THINGS] + ["felt", "home", "stayed", "surprised", "waited"]


def world_vocabulary() -> List[str]:
    """Every word the generators can write: the module's word-list constants and _CODE_WORDS."""
    words = set(_CODE_WORDS)

    def harvest(obj):
        if isinstance(obj, str):
            words.update(obj.split())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            for x in obj:
                harvest(x)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                harvest(k)
                harvest(v)

    for name, value in globals().items():
        if name.isupper() and not name.startswith("_"):
            harvest(value)
    return sorted(words)


def world_lexicon(aliases: int, prob: float = DEFAULT_ALIAS_PROB, seed: int = DEFAULT_SEED) -> Optional[Lexicon]:
    """The latent lexicon of mini-GLUE ``seed`` (None when ``aliases`` is 0)."""
    return Lexicon(world_vocabulary(), aliases, prob, seed) if aliases else None


def _composite_generators() -> Dict[str, Gen]:
    from qbert.data import composite  # builds on this module's units: imported on use

    return composite.GENERATORS


def composite_tasks() -> Tuple[str, ...]:
    """The tasks ``--composite`` changes (qbert.data.composite)."""
    return tuple(_composite_generators())


def _generator(task: str, composite: bool) -> Gen:
    return _composite_generators().get(task, GENERATORS[task]) if composite else GENERATORS[task]


def _split_rows(task: str, split: str, n: int, seed: int, lexicon: Optional[Lexicon] = None,
                aliased: Optional[bool] = None, composite: bool = False) -> List[List[str]]:
    """``n`` rows of ``task``'s ``split``; with ``lexicon``, the text columns of every split
    but train (or as ``aliased`` says) are rewritten with aliases from their own stream;
    ``composite``: the composite form of SST-2, CoLA, RTE, MRPC (qbert.data.composite)."""
    spec = get_task(task)
    kind = "test" if spec.is_test(split) else ("dev" if split in spec.dev_splits else "train")
    # str seeds are hashed with sha512 by random.Random: stable across processes/platforms.
    rng = random.Random(f"mini-glue:{seed}:{task}:{split}")
    if task == "MNLI":
        rows = gen_mnli(rng, n, kind, mismatched=split.endswith("mismatched"))
    else:
        rows = _generator(task, composite)(rng, n, kind)
    if aliased is None:
        aliased = kind != "train"
    if lexicon is None or not aliased:
        return rows
    alias_rng = random.Random(f"mini-glue:{seed}:{task}:{split}:aliases")
    rows = rewrite_columns(lexicon, rows, spec.columns(split), alias_rng)
    if task == "MNLI":  # the parse columns follow their rewritten sentences
        for row in rows:
            prem, hyp = row[8], row[9]
            row[4:8] = [_binary_parse(prem), _binary_parse(hyp), _parse(prem), _parse(hyp)]
    return rows


def train_rows(task: str, train_size, max_train_size: int = DEFAULT_TRAIN_SIZE) -> int:
    """Train rows of ``task``: ``train_size`` itself, or for ``"glue"`` GLUE's own train size
    capped at ``max_train_size``."""
    if train_size == "glue":
        return min(GLUE_TRAIN_SIZES[get_task(task).name], max_train_size)
    return int(train_size)


def write_task(out_dir: str, task: str, train_size=DEFAULT_TRAIN_SIZE,
               dev_size: int = DEFAULT_DEV_SIZE, test_size: int = DEFAULT_TEST_SIZE,
               seed: int = DEFAULT_SEED, max_train_size: int = DEFAULT_TRAIN_SIZE,
               lexicon: Optional[Lexicon] = None, aliases_in_train: bool = False,
               composite: bool = False) -> List[str]:
    """Write OUT/TASK/*.tsv; returns the written paths. With ``lexicon`` (``world_lexicon``),
    dev and test use the aliases, train only the base words (or, with ``aliases_in_train``,
    the aliases too: the teacher then learns every alias from its labels, and a student
    quantized on a small subset of train meets only part of them). ``composite``: SST-2,
    CoLA, RTE and MRPC in their composite form (qbert.data.composite)."""
    spec = get_task(task)
    train_size = train_rows(spec.name, train_size, max_train_size)
    task_dir = os.path.join(out_dir, spec.name)
    os.makedirs(task_dir, exist_ok=True)
    paths = []
    for split in spec.splits:
        n = test_size if spec.is_test(split) else (dev_size if split in spec.dev_splits else train_size)
        rows = _split_rows(spec.name, split, n, seed, lexicon, aliased=aliases_in_train or None,
                           composite=composite)
        header = spec.header(split)
        lines = []
        if header is not None:
            prefix = spec.header_prefix if not spec.is_test(split) else ""
            lines.append(prefix + "\t".join(header))
        for row in rows:
            assert all("\t" not in c and "\n" not in c for c in row), row
            lines.append("\t".join(row))
        path = os.path.join(task_dir, f"{split}.tsv")
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def generate(out_dir: str, tasks: Sequence[str] | str = "all", train_size=DEFAULT_TRAIN_SIZE,
             dev_size: int = DEFAULT_DEV_SIZE, test_size: int = DEFAULT_TEST_SIZE,
             seed: int = DEFAULT_SEED, max_train_size: int = DEFAULT_TRAIN_SIZE,
             aliases: int = DEFAULT_ALIASES, alias_prob: float = DEFAULT_ALIAS_PROB,
             aliases_in_train: bool = False, composite: bool = False) -> Dict[str, List[str]]:
    names = parse_tasks(tasks)
    lexicon = world_lexicon(aliases, alias_prob, seed)
    return {t: write_task(out_dir, t, train_size, dev_size, test_size, seed, max_train_size, lexicon,
                          aliases_in_train, composite) for t in names}


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = low - 1
    if v < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return v


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def _non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def _train_size(text: str):
    if text == "glue":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'glue', got {text!r}") from None


def _probability(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in (0, 1], got {text!r}")
    return v


def add_lexicon_args(parser: argparse.ArgumentParser) -> None:
    """--aliases / --alias-prob, shared with qbert.data.mini_corpus (same values must be
    given to both: the corpus has to teach the aliases the dev splits use)."""
    parser.add_argument("--aliases", type=_non_negative_int, default=DEFAULT_ALIASES,
                        help="made-up synonyms per content word (qbert.data.lexicon): dev/test and "
                             "the pretraining corpus use them, train does not; 0 (default): off")
    parser.add_argument("--alias-prob", type=_probability, default=DEFAULT_ALIAS_PROB,
                        help=f"probability that a content word is replaced by an alias "
                             f"(default {DEFAULT_ALIAS_PROB})")


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="qbert-mini-glue",
        description="Write a deterministic synthetic mini-GLUE in the real GLUE layout.",
    )
    parser.add_argument("--out-dir", required=True, help="GLUE data folder to write (OUT/TASK/*.tsv)")
    parser.add_argument("--tasks", default="all",
                        help=f"comma-separated subset of {','.join(TASK_NAMES)} or 'all' (default)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--train-size", type=_train_size, default=DEFAULT_TRAIN_SIZE,
                        help=f"train rows per task, or 'glue' for GLUE's own train sizes capped at "
                             f"--max-train-size (default {DEFAULT_TRAIN_SIZE})")
    parser.add_argument("--max-train-size", type=_positive_int, default=DEFAULT_TRAIN_SIZE,
                        help="cap of --train-size glue")
    parser.add_argument("--dev-size", type=_positive_int, default=DEFAULT_DEV_SIZE,
                        help="rows per dev split (MNLI: each of dev_matched, dev_mismatched)")
    parser.add_argument("--test-size", type=_positive_int, default=DEFAULT_TEST_SIZE)
    add_lexicon_args(parser)
    parser.add_argument("--aliases-in-train", action="store_true",
                        help="train splits use the aliases too (low-resource QAT setting: the "
                             "teacher learns them all, a small QAT subset shows only some)")
    parser.add_argument("--composite", action="store_true",
                        help="SST-2, CoLA, RTE, MRPC in composite form (qbert.data.composite): several "
                             "units per example, the label aggregates theirs, no label noise; the "
                             "other tasks are unchanged")
    args = parser.parse_args(argv)
    try:
        tasks = parse_tasks(args.tasks)
    except UnknownTaskError as e:
        parser.exit(2, f"error: {e}\n")
    lexicon = world_lexicon(args.aliases, args.alias_prob, args.seed)
    for t in tasks:
        paths = write_task(args.out_dir, t, args.train_size, args.dev_size, args.test_size, args.seed,
                           args.max_train_size, lexicon, args.aliases_in_train, args.composite)
        print(f"{t}: " + " ".join(os.path.basename(p) for p in paths) + f" -> {os.path.join(args.out_dir, t)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
