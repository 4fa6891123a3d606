"""Finetuning data Corral writes itself: topic-labelled sentences and story questions.

Like the story corpus (:mod:`workers.core.corpus`) both sets come from small word lists and
templates in this file, so they carry no licence question and need no download.

* :func:`topic_records` — ``{"text", "label"}`` sentences about one of :data:`TOPICS`
  (weather, food, sports, music), for sequence classification: chance is 25 %.
* :func:`question_records` — ``{"prompt", "response"}`` pairs for instruction tuning: the
  opening of a generated story, then a question whose answer is in it ("Where did Tom live?"
  → "a quiet village"). The stories are those past the first million of the corpus, which no
  pretraining run of up to a million generated documents has seen.
"""

from __future__ import annotations

import random
import re

from workers.core.corpus import generated_story

TOPICS = ("weather", "food", "sports", "music")
"""Label ``i`` of a topic record is ``TOPICS[i]``."""

_NAMES = ["Tom", "Lily", "Max", "Mia", "Ben", "Anna", "Sam", "Lucy", "Leo", "Emma", "Jack", "Zoe",
          "Finn", "Ruby", "Noah", "Ella", "Oscar", "Grace", "Hugo", "Ivy"]
_PLACES = ["the village", "the old farm", "the town square", "the hills", "the harbour",
           "the valley", "the school", "the park", "the island", "the city"]
_WHEN = ["Yesterday", "This morning", "Last winter", "On Sunday", "At noon", "Late at night",
         "Every spring", "Once again", "Just before dinner", "All week"]
_AFTER = ["and everyone talked about it.", "for the whole afternoon.", "as the day went on.",
          "and nobody expected it.", "while the neighbours watched.", "once more."]

_TOPIC_CLAUSES: dict[str, list[str]] = {
    "weather": [
        "heavy rain fell over {place}", "a cold wind blew through {place}",
        "thick fog covered {place}", "the sun shone warmly on {place}",
        "snow piled up around {place}", "thunder rolled above {place}",
        "{name} watched the storm clouds gather over {place}",
        "{name} checked the forecast because hail was coming to {place}",
        "the temperature dropped below freezing in {place}",
        "a rainbow appeared after the shower over {place}",
    ],
    "food": [
        "{name} baked fresh bread in {place}", "{name} cooked a pot of vegetable soup",
        "the bakery in {place} sold warm apple pies", "{name} tasted a spicy curry",
        "{name} shared pancakes with honey at {place}",
        "the cheese at the market in {place} was salty and sharp",
        "{name} peeled potatoes for the stew", "{name} ate ripe strawberries with cream",
        "a new restaurant in {place} served noodles and dumplings",
        "{name} followed a recipe for chocolate cake",
    ],
    "sports": [
        "{name} scored a goal in the football match at {place}",
        "the team from {place} won the relay race", "{name} swam ten lengths of the pool",
        "{name} practised tennis serves at {place}", "the players trained hard for the final",
        "{name} finished the marathon through {place}",
        "the basketball game at {place} went to overtime",
        "{name} threw the javelin further than anyone", "{name} cycled up the hill in the race",
        "the referee blew the whistle to start the match",
    ],
    "music": [
        "{name} played a song on the piano at {place}", "the band in {place} tuned their guitars",
        "{name} sang a folk song to the crowd", "the choir at {place} rehearsed a new hymn",
        "{name} practised scales on the violin", "a drummer kept a steady beat in {place}",
        "{name} wrote the lyrics for a new album", "the orchestra performed a symphony at {place}",
        "{name} learned to read sheet music", "a jazz trio played late into the night",
    ],
}


def topic_record(seed: int, index: int) -> dict[str, str | int]:
    """Sentence ``index`` of the topic set for ``seed``: ``{"text": ..., "label": topic}``."""
    rng = random.Random(seed * 1_000_003 + index)
    label = rng.randrange(len(TOPICS))
    clause = rng.choice(_TOPIC_CLAUSES[TOPICS[label]]).format(
        name=rng.choice(_NAMES), place=rng.choice(_PLACES))
    return {"text": f"{rng.choice(_WHEN)}, {clause} {rng.choice(_AFTER)}", "label": label}


def topic_records(seed: int, count: int) -> list[dict[str, str | int]]:
    """The first ``count`` records of the topic set for ``seed``."""
    return [topic_record(seed, index) for index in range(count)]


QUESTION_STORY_OFFSET = 1_000_000
"""Stories for questions start here, past any pretraining corpus of up to a million stories."""

_OPENING_SENTENCES = 4
_FACTS = re.compile(
    r"(?:little|young) (?P<animal>\w+) named \w+|There once was an? (?P<animal2>\w+) called \w+"
)
_PLACE = re.compile(r"^(?P<name>\w+) lived in (?P<place>.+)\.$")
_ACTIVITY = re.compile(r"liked to (?P<activity>.+)\.$")
_THING = re.compile(r"had (?P<thing>an? \w+ \w+) that")


def question_record(seed: int, index: int) -> dict[str, str]:
    """Question ``index`` for ``seed``: a story's opening and a question about it, and the answer.

    The question kind cycles with ``index`` (who, which animal, where, what they liked to do,
    what they loved), so every kind is equally frequent.
    """
    story = generated_story(seed, QUESTION_STORY_OFFSET + index)
    sentences = re.split(r"(?<=[.!?]) ", story)[:_OPENING_SENTENCES]
    animal_match = _FACTS.search(sentences[0])
    place_match = _PLACE.match(sentences[1])
    activity_match = _ACTIVITY.search(sentences[2])
    thing_match = _THING.search(sentences[3])
    if not (animal_match and place_match and activity_match and thing_match):
        raise AssertionError(f"story {index} does not open as the story templates do: {story}")
    name = place_match["name"]
    questions = [
        ("Who is this story about?", name),
        (f"What kind of animal is {name}?", animal_match["animal"] or animal_match["animal2"]),
        (f"Where did {name} live?", place_match["place"]),
        (f"What did {name} like to do every day?", activity_match["activity"]),
        (f"What did {name} love very much?", thing_match["thing"]),
    ]
    question, answer = questions[index % len(questions)]
    return {"prompt": f"{' '.join(sentences)}\nQuestion: {question}\nAnswer:",
            "response": f" {answer}"}


def question_records(seed: int, count: int) -> list[dict[str, str]]:
    """The first ``count`` question records for ``seed``."""
    return [question_record(seed, index) for index in range(count)]
