"""Training text as a list of documents: a generated story corpus, or ``.txt`` / ``.jsonl`` files.

The generated corpus is written here from small word lists and sentence templates, so it is free
of any licence question and needs no download. Each story keeps its characters, places and
objects consistent from sentence to sentence, which gives a tiny model structure to learn beyond
word frequencies (names to copy, pronouns that agree, a fixed story arc): its loss falls quickly
and clearly, which is what smoke tests and calibration runs need.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scheduler.domain.errors import SpecError
from scheduler.domain.spec import DataSpec

_HEROES = [
    ("Tom", "he", "his"), ("Lily", "she", "her"), ("Max", "he", "his"), ("Mia", "she", "her"),
    ("Ben", "he", "his"), ("Anna", "she", "her"), ("Sam", "he", "his"), ("Lucy", "she", "her"),
    ("Leo", "he", "his"), ("Emma", "she", "her"), ("Jack", "he", "his"), ("Zoe", "she", "her"),
    ("Finn", "he", "his"), ("Ruby", "she", "her"), ("Noah", "he", "his"), ("Ella", "she", "her"),
    ("Oscar", "he", "his"), ("Grace", "she", "her"), ("Hugo", "he", "his"), ("Ivy", "she", "her"),
    ("Felix", "he", "his"), ("Nora", "she", "her"), ("Theo", "he", "his"), ("Rosa", "she", "her"),
]
_ANIMALS = ["cat", "dog", "rabbit", "fox", "bird", "bear", "mouse", "duck", "frog", "owl",
            "turtle", "squirrel", "hedgehog", "goat", "lamb", "pony", "beaver", "otter"]
_PLACES = ["a small house by the river", "a big green forest", "a quiet village",
           "an old farm", "a busy town", "a cozy cabin on a hill", "a sunny garden",
           "a little boat on the lake", "a windy island", "a snowy valley",
           "a tall tower of stone", "a field full of daisies"]
_OBJECTS = ["ball", "kite", "hat", "book", "box", "key", "cake", "drum", "lamp", "shell",
            "map", "blanket", "whistle", "scarf", "basket", "bell", "spoon", "compass"]
_COLORS = ["red", "blue", "yellow", "green", "shiny", "tiny", "soft", "big", "old", "bright",
           "purple", "orange", "striped", "golden"]
_HIDING_PLACES = ["under the bed", "behind a tree", "in the tall grass", "on the roof",
                  "inside an old boot", "near the pond", "under a pile of leaves",
                  "behind the barn", "at the bottom of the well", "in a bird's nest"]
_ACTIVITIES = ["play in the sun", "sing songs", "read stories", "run in the park",
               "draw pictures", "look at the stars", "pick flowers", "build towers of sticks",
               "splash in puddles", "bake bread", "climb small hills", "count the clouds"]
_FOODS = ["apples", "carrots", "honey", "berries", "soup", "pancakes", "nuts", "cheese"]
_WEATHER = ["the rain was falling", "the sun was warm", "a cold wind was blowing",
            "snow covered the ground", "the sky was full of clouds"]
_FEELINGS_BAD = ["sad", "worried", "upset", "scared", "lonely"]
_FEELINGS_GOOD = ["happy", "glad", "proud", "excited", "thankful"]
_MORALS = [
    "Friends are the best help when something goes wrong.",
    "It is good to look carefully and never give up.",
    "Sharing makes every day a little brighter.",
    "Being kind to others always comes back to you.",
    "A problem is smaller when two friends face it together.",
]


def _a(word: str) -> str:
    """``word`` with its indefinite article: "a red kite", "an old kite"."""
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def generated_story(seed: int, index: int) -> str:
    """Story ``index`` of the corpus for ``seed``: the same text on every machine and run."""
    # One generator per document: story i does not depend on how many stories are generated.
    rng = random.Random(seed * 1_000_003 + index)
    name, he, his = rng.choice(_HEROES)
    friend_name, friend_he, _ = rng.choice([h for h in _HEROES if h[0] != name])
    animal, friend_animal = rng.sample(_ANIMALS, 2)
    thing, color = rng.choice(_OBJECTS), rng.choice(_COLORS)
    place, hiding = rng.choice(_PLACES), rng.choice(_HIDING_PLACES)
    activity = rng.choice(_ACTIVITIES)
    bad, good = rng.choice(_FEELINGS_BAD), rng.choice(_FEELINGS_GOOD)
    food, weather = rng.choice(_FOODS), rng.choice(_WEATHER)
    He, Friend_he = he.capitalize(), friend_he.capitalize()

    opening = rng.choice([
        f"Once upon a time, there was a little {animal} named {name}.",
        f"There once was {_a(animal)} called {name}.",
        f"Long ago, a young {animal} named {name} lived far away.",
    ])
    sentences = [
        opening,
        f"{name} lived in {place}.",
        f"Every day, {name} liked to {activity}.",
        f"{He} had {_a(color)} {thing} that {he} loved very much.",
        rng.choice([
            f"One morning, {name} could not find {his} {color} {thing}.",
            f"One day, the wind blew {his} {color} {thing} away.",
            f"But one evening, {his} {color} {thing} was gone.",
        ]),
        f"{name} felt {bad}.",
        f"{He} looked everywhere, but the {thing} was not there.",
        rng.choice([
            f"Then {he} met {friend_name}, a kind {friend_animal}.",
            f"Soon {friend_name} the {friend_animal} came by.",
        ]),
        f"\"Why are you {bad}, {name}?\" asked {friend_name}.",
        f"\"I lost my {color} {thing},\" said {name}.",
        f"\"I will help you,\" said {friend_name}.",
        rng.choice([
            f"Outside, {weather}.",
            f"First they shared some {food}, because {name} was hungry.",
            f"They walked a long way, and {weather}.",
        ]),
        f"Together they looked {hiding}.",
        f"{Friend_he} found the {color} {thing} there!",
        f"{name} was very {good}.",
        f"\"Thank you, {friend_name}!\" {he} said.",
        rng.choice([
            f"From that day on, {name} and {friend_name} played together every day.",
            f"After that, {name} shared {his} {thing} with {friend_name}.",
        ]),
        rng.choice(_MORALS),
    ]
    return " ".join(sentences)


def generated_corpus(seed: int, documents: int) -> list[str]:
    """The first ``documents`` stories of the generated corpus for ``seed``."""
    return [generated_story(seed, index) for index in range(documents)]


def read_text_file(path: Path) -> list[str]:
    """A ``.txt`` file as documents: paragraphs separated by one or more blank lines."""
    text = path.read_text(encoding="utf-8")
    return [part.strip() for part in re.split(r"\n\s*\n", text) if part.strip()]


def jsonl_objects(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for every non-blank line; errors name the file and line."""
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_number, json.loads(line)
            except json.JSONDecodeError as err:
                raise SpecError(f"{path}:{line_number}: not valid JSON ({err.msg})") from None


def read_jsonl_file(path: Path, text_field: str) -> list[str]:
    """A ``.jsonl`` file as documents: the ``text_field`` string of every line's object."""
    documents = []
    for line_number, record in jsonl_objects(path):
        value = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise SpecError(
                f"{path}:{line_number}: no string field {text_field!r}; set data.text_field "
                f"to the field that holds the text"
            )
        documents.append(value)
    return documents


def load_documents(data: DataSpec, seed: int) -> list[str]:
    """The documents a job trains on, as its data spec describes them."""
    if data.source == "generated":
        return generated_corpus(seed, data.generated_documents)
    assert data.path is not None  # DataSpec guarantees a path for source: file
    path = Path(data.path)
    if not path.is_file():
        raise SpecError(f"data.path: {path} does not exist or is not a file")
    if path.suffix == ".txt":
        documents = read_text_file(path)
    elif path.suffix == ".jsonl":
        documents = read_jsonl_file(path, data.text_field)
    else:
        raise SpecError(f"data.path: {path} must end in .txt or .jsonl, got {path.suffix!r}")
    if not documents:
        raise SpecError(f"data.path: {path} holds no text")
    return documents
