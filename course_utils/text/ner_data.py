"""An offline named-entity data set in the CoNLL-2003 style, made by a seeded generator.

Sentences read like news wire: reports, quotes, results lists, upper-case
headlines and datelines, and sentences with no entity at all. Entities are
PER (people), ORG (companies, clubs, universities), LOC (cities, countries,
regions) and MISC (nationalities and events), many of them several words long.

Every name pool is split three ways, so **the names of the dev and test splits
never occur in training**: to tag a surname or a city it has never seen, a model
must read the context, not remember the name. A fourth
split, ``test_seen``, uses the training names in new sentences, which shows how
much of a score is memory. Some first names are also place names (Florence,
Austin, ...); they are used both ways, and only the context says which.

The sentences come from templates ("{PER} was born in {CITY} and moved to
{COUNTRY} in {YEAR} ."). A seeded fifth of each kind of template is **held out**:
train, dev, test and test_seen never use it, and a fifth split,
``test_new_templates``, is made only of it (with the test split's unseen names).
``test`` thus measures unseen names in sentence frames seen in training;
``test_new_templates`` unseen names in sentence frames never seen in training.

``generate(seed)`` returns the same sentences for the same seed on every
machine (it uses only :mod:`random` with its own generator).
"""

from __future__ import annotations

import random
from typing import Callable

Sentence = tuple[list[str], list[str]]

SPLITS = ("train", "dev", "test", "test_seen", "test_new_templates")
DEFAULT_SIZES = {"train": 6000, "dev": 500, "test": 800, "test_seen": 400, "test_new_templates": 800}
HELD_OUT_SPLIT = "test_new_templates"  # the one split made of held-out templates
HELD_OUT_FRACTION = 0.2  # share of each kind of template held out of train/dev/test/test_seen

# Name pools. Each is shuffled with the seed and cut 60/15/25 into train/dev/test pools.
FIRST_NAMES = """James Maria Wei Aisha Carlos Olga Kenji Fatima Lars Priya Ahmed Elena Tomas Ingrid Kwame Mei
Pierre Anya Rahul Dmitri Chloe Hassan Yuki Mateo Grace Ivan Leila Samuel Nadia Oscar Hana Viktor Amara Felix
Zara Andrei Lucia Kofi Emma Rafael Sanjay Ines Tariq Helga Diego Mariam Stefan Ayumi Noah Bianca Jonas Esther
Omar Clara Pablo Sunita Erik Naomi Hugo Akira Rosa Marek Chidi Julia Ali Freya Luca Anjali Tobias Irina Yusuf
Camille Bruno Keiko Sipho Laura Nikolai Amira Ruben Mira Jakob Thandiwe Marco Eva Bilal Agnes Teodor Selin
Arjun Nora Kaito Lina Gustav Adaeze Paolo Vera Emre Dalia Rohan Greta Mehmet Pilar Sven Ewa Tendai Ilse Farid
Marta Hiroshi Zainab Anders Beatriz Kamal Lotte Ruth Ibrahim Elif Sara Joaquin Ayesha Henrik Olivia Bogdan
Nkechi Felipe Hanna Rashid Lena Takeshi Yara Wojciech Daniela Musa Astrid Vikram Carmen Aleksander Imani""".split()

SURNAMES = """Smith Garcia Okafor Novak Tanaka Kowalski Schmidt Rossi Haddad Patel Johansson Moreau Mensah
Fernandes Kim Nakamura Dubois Muller Hoffmann Silva Nguyen Kaur Andersen Petrov Lopez Abebe Brennan Castillo
Demir Eriksen Fischer Gallagher Horvath Jensen Kapoor Lindqvist Mahlangu Nakashima Oyelaran Pereira Quinn
Romano Sato Tamura Ulrich Varga Wagner Yilmaz Zhou Achterberg Bianchi Chowdhury Delgado Esposito Farouk
Grunewald Hakimi Iwasaki Jovanovic Kruger Lambert Moretti Nielsen Okonkwo Popescu Quiroga Richter Sandoval
Takahashi Umarov Valdez Wozniak Yamamoto Zielinski Adeyemi Bergstrom Cardoso Dimitrov Engel Ferreira Gonzaga
Hartmann Ishikawa Jaramillo Kovacs Lundgren Mazur Nwosu Ortega Pavlenko Rahman Stein Toivonen Urbano Vasquez
Weiss Yoshida Zapata Brandt Cohen Duarte Ekstrom Falk Gomes Iqbal Janssen Larsen Medina Nunez Oliveira Reyes
Sundberg Tran Vogel Watanabe Zhang Asante Bauer Dahl Erdogan Fuentes Gupta Huang Ikeda Kaminski Lehmann
Mendoza Novotny Osei Pham Rojas Schulz Torres Bakker Chaudhry Eze Fontaine Guerrero Haas Kaya Lindberg Morales
Nakagawa Obi Petrovic Ramos Svensson Tkachenko Vidal Wolff Kowalczyk Abdi Barros""".split()

# Names that are people and places: in a PER slot or a LOC slot, only the context tells.
AMBIGUOUS = """Florence Austin Victoria Madison Lincoln Sydney Jordan Georgia Chelsea Paris Washington Regina
Adelaide Charlotte Savannah Brooklyn Dallas Camden Phoenix Orlando Eugene Hamilton Aurora Cheyenne""".split()

CITIES = (
    """London Berlin Madrid Rome Lisbon Vienna Prague Warsaw Budapest Athens Oslo Stockholm Helsinki
Copenhagen Dublin Brussels Amsterdam Zurich Geneva Munich Hamburg Milan Naples Barcelona Seville Porto Lyon
Marseille Krakow Bucharest Istanbul Ankara Cairo Lagos Nairobi Accra Dakar Johannesburg Casablanca Tunis
Beirut Amman Riyadh Dubai Doha Tehran Karachi Lahore Mumbai Delhi Kolkata Chennai Bangalore Dhaka Kathmandu
Colombo Bangkok Hanoi Jakarta Manila Seoul Busan Tokyo Osaka Kyoto Beijing Shanghai Shenzhen Taipei Melbourne
Perth Brisbane Auckland Wellington Toronto Montreal Vancouver Ottawa Chicago Boston Denver Seattle Houston
Atlanta Miami Bogota Lima Santiago Montevideo Caracas Quito Havana Reykjavik Tallinn Riga Vilnius Minsk Kyiv
Belgrade Zagreb Ljubljana Bratislava Edinburgh Glasgow Manchester Liverpool Leeds Bristol Cardiff Belfast
Rotterdam Antwerp Gothenburg Bergen Turin Valencia Bilbao Frankfurt Cologne Stuttgart Dresden Leipzig Salzburg
Graz Basel Marrakesh Alexandria Khartoum Kampala Kigali Lusaka Harare Luanda Kinshasa Abuja Durban Mombasa
Tbilisi Yerevan Baku Almaty Tashkent Ulaanbaatar""".split()
    + [
        "New York",
        "Los Angeles",
        "San Francisco",
        "Monterrey",
        "Buenos Aires",
        "Sao Paulo",
        "Rio de Janeiro",
        "Hong Kong",
        "Kuala Lumpur",
        "Cape Town",
        "Addis Ababa",
        "New Delhi",
        "Tel Aviv",
        "Abu Dhabi",
    ]
)

# (country, nationality adjective): the pair goes to one split, so "Kenya" and "Kenyan" travel together.
COUNTRIES = [
    tuple(p.split(":"))
    for p in """France:French Germany:German Spain:Spanish Italy:Italian
Portugal:Portuguese Poland:Polish Austria:Austrian Sweden:Swedish Norway:Norwegian Finland:Finnish
Denmark:Danish Ireland:Irish Belgium:Belgian Switzerland:Swiss Greece:Greek Turkey:Turkish Egypt:Egyptian
Nigeria:Nigerian Kenya:Kenyan Ghana:Ghanaian Senegal:Senegalese Ethiopia:Ethiopian Morocco:Moroccan
Tunisia:Tunisian Lebanon:Lebanese Qatar:Qatari Iran:Iranian Pakistan:Pakistani India:Indian
Bangladesh:Bangladeshi Nepal:Nepalese Thailand:Thai Vietnam:Vietnamese Indonesia:Indonesian
Malaysia:Malaysian Japan:Japanese China:Chinese Taiwan:Taiwanese Australia:Australian Canada:Canadian
Mexico:Mexican Colombia:Colombian Peru:Peruvian Chile:Chilean Argentina:Argentine Uruguay:Uruguayan
Brazil:Brazilian Venezuela:Venezuelan Ecuador:Ecuadorian Cuba:Cuban Jamaica:Jamaican Iceland:Icelandic
Estonia:Estonian Latvia:Latvian Lithuania:Lithuanian Ukraine:Ukrainian Serbia:Serbian Croatia:Croatian
Slovenia:Slovenian Slovakia:Slovak Hungary:Hungarian Romania:Romanian Bulgaria:Bulgarian Russia:Russian
Uganda:Ugandan Rwanda:Rwandan Zambia:Zambian Zimbabwe:Zimbabwean Angola:Angolan Algeria:Algerian
Sudan:Sudanese Tanzania:Tanzanian Mongolia:Mongolian Kazakhstan:Kazakh Bolivia:Bolivian Paraguay:Paraguayan
Armenia:Armenian Azerbaijan:Azerbaijani Cyprus:Cypriot Malta:Maltese Albania:Albanian""".split()
] + [
    ("South Africa", "South African"),
    ("South Korea", "South Korean"),
    ("New Zealand", "New Zealand"),
    ("Saudi Arabia", "Saudi"),
    ("Sri Lanka", "Sri Lankan"),
    ("Costa Rica", "Costa Rican"),
    ("Panama", "Panamanian"),
    ("Kuwait", "Kuwaiti"),
    ("Czech Republic", "Czech"),
]

REGIONS = """Bavaria Catalonia Tuscany Siberia Patagonia Kashmir Scandinavia Flanders Andalusia Normandy
Provence Lombardy Silesia Transylvania Anatolia Punjab Bengal Kerala Yunnan Sichuan Hokkaido Tasmania
Queensland Alberta Ontario Quebec Texas Ohio Oregon Nevada Alaska Yorkshire Cornwall Galicia Sardinia Sicily
Crete Bohemia Moravia Dalmatia Limpopo Darfur Amazonas""".split()

# Distinctive words of organisation names, and the shared words that end them.
ORG_CORES = """Northgate Bluewater Redwood Silverline Ironbridge Greenfield Stonebrook Clearwater Brightpath
Oakridge Westmark Eastwind Sunvale Highmoor Goldcrest Blackwell Whitfield Fairhaven Lakeshore Riverton
Maplewood Pinecrest Cedarline Elmstead Ashford Briarwood Copperfield Deepwell Evergreen Foxglove Hawthorne
Ivywood Keystone Lodestar Meridian Nimbus Pinnacle Radiant Sterling Trident Vanguard Wavecrest Zenith Beacon
Crescent Dynamo Equinox Falcon Glacier Insignia Javelin Kestrel Lumen Monarch Obsidian Paragon Quasar
Sapphire Vertex Zephyr Alder Bramble Corvid Ember Fjordline Garnet Halcyon Larkspur Marlow Norwood Oriel
Pemberton Quarry Rosewell Thornbury Upland Wexford Yarrow Calder Dunmore Everett Granby Holloway Kingsley
Lockwood Mercer Ashcombe Brightwater Coldharbour Driftwood Eastbrook Foxhall""".split()
ORG_SUFFIXES = """Bank Group Holdings Airlines Motors Energy Telecom Pharmaceuticals Insurance Foods Capital
Media Systems Logistics Partners Steel Mining Studios Electronics Chemicals Shipping Securities Brewery
Textiles""".split()
CLUB_SUFFIXES = ["United", "Rovers", "Athletic", "Wanderers", "FC", "City", "Albion"]
EVENT_PATTERNS = [
    "{city} Marathon",
    "{city} Open",
    "{city} Film Festival",
    "{city} Book Fair",
    "{nat} Open",
    "{nat} Grand Prix",
    "{nat} Cup",
    "{nat} Masters",
    "{core} Cup",
    "{core} Trophy",
]

DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
MONTHS = "January February March April May June July August September October November December".split()

# Templates: tokens separated by spaces; {PER}, {ORG}, {LOC}, {MISC} and their variants become entities.
# Sentences start with a capital letter and names are capitalised too, so case alone cannot find them.
NEWS = [
    "{PER} , the chief executive of {ORG} , said on {DAY} that profits rose {PCT} percent .",
    "{ORG} shares fell {PCT} percent in {CITY} after {PER} resigned as chairman .",
    "{PER} was born in {CITY} and moved to {COUNTRY} in {YEAR} .",
    "Police in {CITY} said {NUM} people were injured when a bus overturned .",
    "The {NAT} government has appointed {PER} as its new ambassador to {COUNTRY} .",
    "{SURNAME} scored twice as {CLUB} beat {CLUB} {WIN} on {DAY} .",
    "{ORG} said it would cut {NUM} jobs at its plant near {CITY} .",
    "Speaking in {CITY} , {PER} said talks with {ORG} would resume in {MONTH} .",
    "{PER} of {COUNTRY} won the {EVENT} in a time of two hours {MIN} minutes .",
    "The {EVENT} will be held in {CITY} in {MONTH} {YEAR} .",
    "{NAT} and {NAT} officials met in {CITY} to discuss the trade agreement .",
    "Analysts at {ORG} expect the central bank of {COUNTRY} to raise rates in {MONTH} .",
    "{SURNAME} , who joined {ORG} in {YEAR} , will lead its office in {CITY} .",
    "Shares in {ORG} closed {PCT} percent higher on {DAY} .",
    "{PER} told reporters that {ORG} had no plans to leave {COUNTRY} .",
    "Flights from {CITY} to {CITY} were cancelled because of heavy snow .",
    "The {NAT} striker {PER} signed a three-year contract with {CLUB} .",
    "{COUNTRY} beat {COUNTRY} {WIN} in a friendly match on {DAY} .",
    "According to {PER} , a spokesman for {ORG} , the deal is worth {NUM} million dollars .",
    "{PER} and {PER} will meet in the final of the {EVENT} .",
    "Thousands of people marched through {CITY} on {DAY} to protest against the new law .",
    "{ORG} , based in {CITY} , makes parts for cars and trucks .",
    "Prime Minister {PER} arrived in {CITY} on {DAY} for a two-day visit .",
    "President {PER} of {COUNTRY} called for calm after the vote .",
    "A court in {CITY} sentenced {PER} to {NUM} years in prison .",
    "{PER} , a {NAT} writer who lives in {CITY} , won the prize for the best novel .",
    "The minister said {COUNTRY} would send food and medicine to {REGION} .",
    "{ORG} agreed to buy {ORG} for {NUM} million euros .",
    '" We are very happy with the result , " {PER} said after the match in {CITY} .',
    "{PER} , {AGE} , has played for {CLUB} since {YEAR} .",
    "Born in {CITY} , {PER} studied law at the {UNIVERSITY} before joining {ORG} .",
    "{NAT} investors bought {NUM} million shares of {ORG} last week .",
    "Heavy rain caused floods across {REGION} and parts of {COUNTRY} .",
    "{PER} , the {NAT} foreign minister , will visit {CITY} and {CITY} next month .",
    "The {UNIVERSITY} said {PER} would join its physics department in {MONTH} .",
    "Fans of {CLUB} celebrated in the streets of {CITY} until late on {DAY} .",
    "{ORG} opened a new factory in {REGION} , creating {NUM} jobs .",
    "{SURNAME} told {ORG} that the board would meet again in {MONTH} .",
    "The {NAT} company {ORG} reported a net loss of {NUM} million dollars .",
    "{PER} , coach of {CLUB} , was fined for criticising the referee .",
    "Talks between {ORG} and the unions broke down in {CITY} on {DAY} .",
    "{PER} met {PER} in {CITY} to discuss the conflict in {REGION} .",
    "Tourists from {COUNTRY} and {COUNTRY} filled the hotels of {CITY} this summer .",
    "The {EVENT} was won by {PER} , who beat {SURNAME} in the final .",
    "{ORG} will sponsor the {EVENT} for another three years .",
    "Earlier this year {PER} left {ORG} to set up a firm in {CITY} .",
    "{PER} said the decision of the {NAT} court was a surprise .",
    "A spokeswoman for {ORG} in {CITY} declined to comment .",
    "{CITY} is the largest city in {REGION} , with about {NUM} thousand people .",
    "Exports from {COUNTRY} to {COUNTRY} rose {PCT} percent in {MONTH} .",
    "The {NAT} team arrived in {CITY} on {DAY} ahead of the {EVENT} .",
    "{PER} thanked the people of {CITY} for their support .",
    "In {CITY} , {ORG} and {ORG} signed a deal to share their networks .",
    "The plane from {CITY} landed safely in {CITY} after an engine problem .",
    "{PER} , who was appointed by {ORG} in {MONTH} , resigned on {DAY} .",
    "Rescue teams reached the village in {REGION} late on {DAY} .",
    "{SURNAME} said the {NAT} economy would grow by {PCT} percent next year .",
    "The painting was sold to a collector from {COUNTRY} for {NUM} million dollars .",
    "{PER} and {PER} moved from {CITY} to {REGION} last year .",
    "Supporters of {PER} gathered outside the court in {CITY} .",
]

# Lists, results and tables: little grammar, so the model must read the pattern.
LISTS = [
    "Results of the {EVENT} : 1. {PER} ( {COUNTRY} ) 2. {PER} ( {COUNTRY} ) 3. {PER} ( {COUNTRY} )",
    "Standings : {CLUB} {NUM} points , {CLUB} {NUM} , {CLUB} {NUM} .",
    "{CLUB} {GOALS} {CLUB} {GOALS}",
    "{PER} ( {COUNTRY} ) beat {PER} ( {COUNTRY} ) {TENNIS}",
    "Scorers : {SURNAME} ( {MINUTE} ) , {SURNAME} ( {MINUTE} )",
    "Leading shareholders : {ORG} {PCT} percent , {ORG} {PCT} percent .",
    "Cities on the tour : {CITY} , {CITY} , {CITY} and {CITY} .",
]

# Upper-case headlines and datelines, as in CoNLL-2003: capital letters tell nothing here.
HEADLINES = [
    "SOCCER - {CLUB} BEAT {CLUB} {WIN} .",
    "TENNIS - {SURNAME} BEATS {SURNAME} TO REACH {EVENT} FINAL .",
    "{COUNTRY} TO HOLD ELECTIONS IN {MONTH} .",
    "{ORG} PROFIT RISES {PCT} PCT .",
    "{NAT} PRESIDENT TO VISIT {COUNTRY} .",
    "{CITY} {DATE}",
]

# Sentences with no entity (a third of them start with a capitalised ordinary word).
PLAIN = [
    "Prices rose {PCT} percent in the year to {MONTH} .",
    "The company said sales would improve in the second half .",
    "It was not immediately clear how many people were hurt .",
    "Oil prices fell for a third day on {DAY} .",
    "Rain is expected to continue until the weekend .",
    "The match was abandoned after {NUM} minutes because of a waterlogged pitch .",
    "Officials said the bridge would reopen next week .",
    "Shares ended slightly lower in thin trading .",
    "The government said it would cut taxes for small firms .",
    "Doctors said the patient was in a stable condition .",
    "The new rules will come into force in {MONTH} .",
    "Nobody was injured in the fire , the police said .",
    "Sales rose {PCT} percent compared with a year earlier .",
    "The talks are expected to last several days .",
    "Traders said the market was waiting for new figures .",
    "Half-time {SCORE} .",
]

# The four kinds of template and how often each is drawn.
KINDS = [(NEWS, 0.62), (LISTS, 0.12), (HEADLINES, 0.10), (PLAIN, 0.16)]


def template_split(seed: int = 0) -> tuple[list[list[str]], list[list[str]]]:
    """(seen, held_out): for each kind of :data:`KINDS`, the templates the usual splits use and
    the templates only ``test_new_templates`` uses (a seeded :data:`HELD_OUT_FRACTION`, at least one)."""
    rng = random.Random(f"{seed}-templates")  # its own stream: the name pools do not depend on it
    seen, held_out = [], []
    for family, _ in KINDS:
        order = list(family)
        rng.shuffle(order)
        n_out = max(1, round(HELD_OUT_FRACTION * len(order)))
        held = set(order[:n_out])
        seen.append([t for t in family if t not in held])  # the file's order, for readability
        held_out.append([t for t in family if t in held])
    return seen, held_out


def _split_pool(items: list, rng: random.Random) -> dict[str, list]:
    """Shuffle a pool with the seed and cut it 60/15/25 into train/dev/test names."""
    items = list(items)
    rng.shuffle(items)
    a, b = int(0.60 * len(items)), int(0.75 * len(items))
    return {"train": items[:a], "dev": items[a:b], "test": items[b:]}


# Made-up name words: two or three syllables joined at random ("Tenvaso", "Rinmek").
SYLLABLES = "ka lo mir ten va so rin del bar no tu ve sha lin gor da mek pa ri zu fen ol am bre ti ko nu sar el".split()
MADE_UP_RATE = 0.4  # share of the words of training names replaced by made-up words


def _real_name_words() -> set[str]:
    words = set()
    for pool in (
        FIRST_NAMES,
        SURNAMES,
        AMBIGUOUS,
        CITIES,
        REGIONS,
        ORG_CORES,
        ORG_SUFFIXES,
        CLUB_SUFFIXES,
        [c for c, _ in COUNTRIES],
        [n for _, n in COUNTRIES],
        EVENT_PATTERNS,
    ):
        for name in pool:
            words.update(w.lower() for w in name.split())
    return words


REAL_NAME_WORDS = _real_name_words()  # lower-cased words of every real name in the pools


def made_up_word(rng: random.Random) -> str:
    """A capitalised word that is no word of any real name here, e.g. ``Tenvaso``."""
    while True:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice([2, 2, 3]))).capitalize()
        if word.lower() not in REAL_NAME_WORDS:
            return word


def _disguise(sentence: Sentence, rng: random.Random, rate: float) -> Sentence:
    """Replace each capitalised word of an entity, with probability ``rate``, by a made-up word."""
    tokens, tags = sentence
    tokens = list(tokens)
    for i, (token, tag) in enumerate(zip(tokens, tags)):
        if tag != "O" and token[:1].isupper() and token.isalpha() and rng.random() < rate:
            word = made_up_word(rng)
            tokens[i] = word.upper() if token.isupper() and len(token) > 1 else word
    return tokens, list(tags)


class _Pools:
    """The names one split may use."""

    def __init__(self, pools: dict[str, dict[str, list]], split: str, rng: random.Random):
        name_split = {"test_seen": "train", HELD_OUT_SPLIT: "test"}.get(split, split)
        self.pools = {kind: by_split[name_split] for kind, by_split in pools.items()}
        self.rng = rng

    def pick(self, kind: str):
        """A name of one kind: first, surnames, ambiguous, cities, countries, regions, cores, acronyms."""
        return self.rng.choice(self.pools[kind])


def _make_pools(rng: random.Random) -> dict[str, dict[str, list]]:
    letters = "ABCDEFGHIJKLMNOPRSTUVW"
    acronyms = sorted({"".join(rng.choice(letters) for _ in range(3)) for _ in range(120)})
    return {
        "first": _split_pool(FIRST_NAMES, rng),
        "surnames": _split_pool(SURNAMES, rng),
        "ambiguous": _split_pool(AMBIGUOUS, rng),
        "cities": _split_pool(CITIES, rng),
        "countries": _split_pool(COUNTRIES, rng),
        "regions": _split_pool(REGIONS, rng),
        "cores": _split_pool(ORG_CORES, rng),
        "acronyms": _split_pool(acronyms, rng),
    }


class _Filler:
    """Fills the slots of a template with names (entities) and numbers, days, ... (not entities)."""

    AMBIGUOUS_RATE = 0.12  # how often a person or city slot takes a person-or-place name

    def __init__(self, pools: _Pools, rng: random.Random):
        self.p, self.rng = pools, rng

    def person(self) -> list[str]:
        p, rng = self.p, self.rng
        first = p.pick("first")
        last = p.pick("surnames")
        if rng.random() < self.AMBIGUOUS_RATE:
            if rng.random() < 0.5:
                first = p.pick("ambiguous")
            else:
                last = p.pick("ambiguous")
        return [first, last] if rng.random() < 0.85 else [last]

    def surname(self) -> list[str]:
        if self.rng.random() < self.AMBIGUOUS_RATE:
            return [self.p.pick("ambiguous")]
        return [self.p.pick("surnames")]

    def city(self) -> list[str]:
        if self.rng.random() < self.AMBIGUOUS_RATE:
            return [self.p.pick("ambiguous")]
        return self.p.pick("cities").split()

    def country(self) -> list[str]:
        name = self.p.pick("countries")[0].split()
        return name[1:] if name[0] == "the" else name  # "the" is not part of the name

    def nationality(self) -> list[str]:
        return self.p.pick("countries")[1].split()

    def org(self) -> list[str]:
        p, rng = self.p, self.rng
        r = rng.random()
        if r < 0.55:
            return [p.pick("cores"), rng.choice(ORG_SUFFIXES)]
        if r < 0.70:
            return [p.pick("acronyms")]
        if r < 0.82:
            return [p.pick("surnames"), "&", p.pick("surnames")]
        if r < 0.92:
            return [p.pick("cores")]
        return self.nationality() + [rng.choice(["Football", "Tennis", "Olympic"]), "Federation"]

    def club(self) -> list[str]:
        base = self.p.pick("cities").split() if self.rng.random() < 0.7 else [self.p.pick("cores")]
        return base + [self.rng.choice(CLUB_SUFFIXES)]

    def university(self) -> list[str]:
        if self.rng.random() < 0.5:
            return ["University", "of"] + self.p.pick("cities").split()
        return self.p.pick("cities").split() + [self.rng.choice(["University", "Institute"])]

    def event(self) -> list[str]:
        pattern = self.rng.choice(EVENT_PATTERNS)
        words = []
        for word in pattern.split():
            if word == "{city}":
                words += self.p.pick("cities").split()
            elif word == "{nat}":
                words += self.nationality()
            elif word == "{core}":
                words.append(self.p.pick("cores"))
            else:
                words.append(word)
        return words

    def entity(self, slot: str) -> tuple[list[str], str | None]:
        """(words, type) for one slot; type None for words that are not an entity."""
        rng = self.rng
        makers: dict[str, tuple[Callable[[], list[str]], str]] = {
            "PER": (self.person, "PER"),
            "SURNAME": (self.surname, "PER"),
            "ORG": (self.org, "ORG"),
            "CLUB": (self.club, "ORG"),
            "UNIVERSITY": (self.university, "ORG"),
            "CITY": (self.city, "LOC"),
            "COUNTRY": (self.country, "LOC"),
            "REGION": (lambda: [self.p.pick("regions")], "LOC"),
            "NAT": (self.nationality, "MISC"),
            "EVENT": (self.event, "MISC"),
        }
        if slot in makers:
            make, kind = makers[slot]
            return make(), kind
        plain = {
            "DAY": lambda: rng.choice(DAYS),
            "MONTH": lambda: rng.choice(MONTHS),
            "YEAR": lambda: str(rng.randint(1960, 2024)),
            "NUM": lambda: str(rng.randint(2, 950)),
            "PCT": lambda: f"{rng.randint(1, 40)}.{rng.randint(0, 9)}",
            "AGE": lambda: str(rng.randint(18, 39)),
            "SCORE": lambda: f"{rng.randint(0, 5)}-{rng.randint(0, 5)}",
            "GOALS": lambda: str(rng.randint(0, 5)),
            "MINUTE": lambda: f"{rng.randint(1, 90)}th",
            "MIN": lambda: f"{rng.randint(3, 59):02d}",
            "WIN": lambda: (lambda a: f"{a}-{rng.randint(0, a - 1)}")(rng.randint(1, 5)),
            "TENNIS": lambda: " ".join(f"{rng.choice([6, 7])}-{rng.randint(0, 4)}" for _ in range(rng.choice([2, 3]))),
            "DATE": lambda: f"{rng.randint(1990, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        }
        if slot not in plain:
            raise KeyError(f"unknown slot {{{slot}}} in a template")
        return plain[slot]().split(), None


def _fill(template: str, filler: _Filler, upper: bool) -> Sentence:
    tokens: list[str] = []
    tags: list[str] = []
    for piece in template.split():
        if piece.startswith("{") and piece.endswith("}"):
            words, kind = filler.entity(piece[1:-1])
        else:
            words, kind = [piece], None
        for i, word in enumerate(words):
            tokens.append(word.upper() if upper else word)
            tags.append("O" if kind is None else ("B-" if i == 0 else "I-") + kind)
    if not upper and tokens[0][0].islower():
        tokens[0] = tokens[0][0].upper() + tokens[0][1:]
    return tokens, tags


def generate(
    seed: int = 0, sizes: dict[str, int] | None = None, made_up: float = MADE_UP_RATE
) -> dict[str, list[Sentence]]:
    """The splits of :data:`SPLITS` as lists of (tokens, tags).

    The names of dev, test and test_new_templates never occur in train (``test_seen`` reuses
    the real train names); the templates of ``test_new_templates`` are used by no other split
    (:func:`template_split`).
    In ``train``, a share ``made_up`` of the words of names are replaced by made-up words
    (random syllables): a model that cannot memorise them learns to read the context.
    The same seed gives the same sentences everywhere; ``sizes`` sets the number of sentences
    per split (defaults: :data:`DEFAULT_SIZES`).
    """
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    unknown = set(sizes) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; the splits are {', '.join(SPLITS)}")
    rng = random.Random(seed)
    pools = _make_pools(rng)
    seen, held_out = template_split(seed)
    data = {}
    for index, split in enumerate(SPLITS):
        split_rng = random.Random(f"{seed}-{index}-{split}")  # each split its own stream: sizes stay independent
        families = held_out if split == HELD_OUT_SPLIT else seen
        sentences = []
        for _ in range(sizes[split]):
            filler = _Filler(_Pools(pools, split, split_rng), split_rng)
            kind = split_rng.choices(range(len(KINDS)), weights=[w for _, w in KINDS])[0]
            template = split_rng.choice(families[kind])
            sentence = _fill(template, filler, upper=KINDS[kind][0] is HEADLINES)
            if split == "train" and made_up > 0:
                sentence = _disguise(sentence, split_rng, made_up)
            sentences.append(sentence)
        data[split] = sentences
    return data
