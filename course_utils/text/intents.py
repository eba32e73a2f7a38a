"""Intent detection for customer-service messages: an offline, seeded data set.

Chapter 04's second task: one label per *sentence* (what does the customer want?), read
from BERT's [CLS] representation. Messages are built from phrasings per intent, with
products, order numbers, dates, greetings and sign-offs filled in, and some noise
(lower case, no final punctuation) as real messages have.

A quarter of the phrasings of each intent are kept for the test split only, so a good
test score needs the meaning of a message, not its exact wording.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from course_utils.paths import DATA_DIR

OFFLINE_DIR = DATA_DIR / "intents"
DEFAULT_SIZES = {"train": 1200, "test": 400}

PHRASINGS = {
    "track_order": [
        "Where is my order {order} ?",
        "My package has not arrived yet , can you check order {order} ?",
        "When will my {product} be delivered ?",
        "Can you tell me the status of my order ?",
        "I ordered a {product} on {day} and still have no tracking number .",
        "Has order {order} been shipped yet ?",
        "The tracking page for my {product} has not changed for days .",
        "How long until my parcel gets here ?",
        "Is my {product} on its way ?",
        "I am still waiting for the {product} I bought last week .",
        "Could you find out where my delivery is ?",
        "Which courier is bringing order {order} ?",
    ],
    "cancel_order": [
        "Please cancel my order {order} .",
        "I want to cancel the {product} I ordered on {day} .",
        "Can I still cancel order {order} ?",
        "I changed my mind , please do not send the {product} .",
        "Stop my order before it ships , please .",
        "I ordered the wrong {product} by mistake , cancel it please .",
        "How do I cancel an order I placed today ?",
        "Cancel order {order} , I no longer need it .",
        "I would like to call off my purchase of the {product} .",
        "Is it too late to cancel what I bought this morning ?",
        "Please void order {order} and do not charge me .",
        "I do not want the {product} any more , cancel the order .",
    ],
    "return_refund": [
        "I want to return the {product} I received .",
        "How do I get a refund for order {order} ?",
        "The {product} is broken , I would like my money back .",
        "Can I send back the {product} ? It is the wrong size .",
        "I returned the {product} two weeks ago and still have no refund .",
        "What is your return policy for a {product} ?",
        "The {product} arrived damaged , I want to return it .",
        "Please refund order {order} .",
        "The {product} does not work , how do I send it back ?",
        "I need a return label for my {product} .",
        "When will I see the refund for the {product} on my card ?",
        "Can I exchange the {product} for a different colour ?",
    ],
    "change_address": [
        "I need to change the delivery address for order {order} .",
        "Can you ship my {product} to a different address ?",
        "I moved to {city} , please update my shipping address .",
        "Wrong address on order {order} , can I fix it ?",
        "Please send the parcel to my office in {city} instead .",
        "How do I update my address before the {product} ships ?",
        "I typed the wrong street name for my delivery .",
        "Could the {product} go to my parents in {city} ?",
        "Change the postcode on my order please .",
        "Can I have order {order} delivered to a pickup point in {city} ?",
        "My address is missing the flat number , can you add it ?",
        "I will not be home , deliver it to my work address please .",
    ],
    "payment_problem": [
        "My card was declined when I tried to buy the {product} .",
        "I was charged twice for order {order} .",
        "Why did my payment fail ?",
        "The checkout keeps rejecting my credit card .",
        "I see a charge on my statement I do not recognise .",
        "Can I pay for the {product} with a gift card ?",
        "You took the money but my order {order} says unpaid .",
        "My bank says the payment for the {product} went through twice .",
        "The discount code did not apply to my payment .",
        "Is there a problem with paying by bank transfer ?",
        "I was billed the wrong amount for the {product} .",
        "Payment error when ordering the {product} , please help .",
    ],
    "account_login": [
        "I cannot log in to my account .",
        "I forgot my password , how do I reset it ?",
        "The password reset email never arrives .",
        "My account is locked after too many attempts .",
        "How do I change the email address on my account ?",
        "The app says my login details are wrong but they are right .",
        "I want to delete my account .",
        "Someone else may have access to my account .",
        "I never got the verification code to sign in .",
        "How can I change my username ?",
        "The sign in page keeps loading forever .",
        "I made two accounts by mistake , can you merge them ?",
    ],
    "product_question": [
        "Does the {product} come in {colour} ?",
        "Is the {product} in stock in size {size} ?",
        "What is the battery life of the {product} ?",
        "Is the {product} waterproof ?",
        "Will the {product} be available again soon ?",
        "What material is the {product} made of ?",
        "Can the {product} be washed in a machine ?",
        "How big is the {product} exactly ?",
        "Does the {product} work with my phone ?",
        "Do you sell spare parts for the {product} ?",
        "Is there a warranty on the {product} ?",
        "What is the difference between the two {product} models ?",
    ],
    "talk_to_agent": [
        "Can I speak to a real person ?",
        "I want to talk to a human agent .",
        "Please connect me with customer service .",
        "Is there a phone number I can call ?",
        "Transfer me to an agent please .",
        "I would rather talk to someone on the phone .",
        "This bot is not helping , get me a person .",
        "Can someone from your team call me back ?",
        "I need to speak with a manager .",
        "Are your support staff available on {day} ?",
        "Put me through to a supervisor .",
        "How do I reach your support team directly ?",
    ],
}
INTENTS = tuple(PHRASINGS)

PRODUCTS = """laptop phone charger jacket kettle blender backpack lamp headset camera watch sofa mattress
toaster printer keyboard monitor tent bicycle helmet vacuum sweater dress jeans scarf umbrella
speaker tablet drill""".split()
COLOURS = "black white red blue green grey navy pink yellow".split()
CITIES = "Leeds Lyon Porto Graz Turin Bergen Krakow Dublin Seville Basel Utrecht Aarhus".split()
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
GREETINGS = ["", "", "", "Hi ,", "Hello ,", "Hello there .", "Good morning ,", "Hey ,", "Quick question :"]
SIGN_OFFS = ["", "", "", "Thanks !", "Thank you .", "Please help .", "Thanks in advance .", "Cheers ."]


def _fill(phrasing: str, rng: random.Random) -> str:
    slots = {
        "{order}": lambda: f"#{rng.randint(10000, 99999)}",
        "{product}": lambda: rng.choice(PRODUCTS),
        "{colour}": lambda: rng.choice(COLOURS),
        "{size}": lambda: rng.choice(["S", "M", "L", "XL", "42"]),
        "{city}": lambda: rng.choice(CITIES),
        "{day}": lambda: rng.choice(DAYS),
    }
    body = " ".join(slots[w]() if w in slots else w for w in phrasing.split())
    greeting, sign_off = rng.choice(GREETINGS), rng.choice(SIGN_OFFS)
    if greeting.endswith(",") and not body.startswith("I "):
        body = body[0].lower() + body[1:]  # "Hi, can you ..." reads better than "Hi, Can you ..."
    if sign_off.lower().rstrip(" .") in body.lower():
        sign_off = ""  # no "please help. Please help."
    text = " ".join(w for w in [greeting, body, sign_off] if w)
    text = text.replace(" ,", ",").replace(" .", ".").replace(" ?", "?").replace(" !", "!").replace(" :", ":")
    if rng.random() < 0.2:
        text = text.lower()
    if rng.random() < 0.2:
        text = text.rstrip(".?!")
    return text


def generate(seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, list[tuple[str, str]]]:
    """``{"train": [(text, intent), ...], "test": [...]}``; test uses held-out phrasings."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    rng = random.Random(seed)
    held_out = {}
    for intent, phrasings in PHRASINGS.items():
        order = list(range(len(phrasings)))
        rng.shuffle(order)
        held_out[intent] = set(order[: len(phrasings) // 4])
    data = {}
    for split in ("train", "test"):
        split_rng = random.Random(f"{seed}-intents-{split}")
        examples = []
        for _ in range(sizes[split]):
            intent = split_rng.choice(INTENTS)
            pool = [p for i, p in enumerate(PHRASINGS[intent]) if (i in held_out[intent]) == (split == "test")]
            examples.append((_fill(split_rng.choice(pool), split_rng), intent))
        data[split] = examples
    return data


def write_tsv(examples, path: str | Path) -> Path:
    """Write (text, intent) pairs as a tab-separated file with a header ``text<TAB>intent``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["text", "intent"])
        for text, intent in examples:
            if "\t" in text or "\n" in text:
                raise ValueError(f"message {text!r} contains a tab or a newline, which a TSV file cannot hold")
            writer.writerow([text, intent])
    return path


def read_tsv(path: str | Path) -> list[tuple[str, str]]:
    """Read a ``text<TAB>intent`` file (with that header) into (text, intent) pairs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"intent file {path} does not exist: check the path, or use generate(seed).")
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows or rows[0] != ["text", "intent"]:
        raise ValueError(f"{path}: the first line must be the header 'text<TAB>intent', got {rows[:1]}")
    examples = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"{path}, line {number}: expected a message and an intent separated by one tab, got {row}")
        examples.append((row[0], row[1]))
    if not examples:
        raise ValueError(f"{path} has a header but no messages.")
    return examples


def write_offline_data(directory: str | Path = OFFLINE_DIR, seed: int = 0) -> dict[str, Path]:
    return {split: write_tsv(examples, Path(directory) / f"{split}.tsv") for split, examples in generate(seed).items()}


def offline_data(seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """The offline splits: the shipped files for seed 0, generated otherwise."""
    if seed == 0 and all((OFFLINE_DIR / f"{s}.tsv").is_file() for s in DEFAULT_SIZES):
        return {s: read_tsv(OFFLINE_DIR / f"{s}.tsv") for s in DEFAULT_SIZES}
    return generate(seed)
