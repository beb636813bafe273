"""Entity pools and the train/held-out split that the synthetic corpus draws from.

Held-out evaluation must use entities the trainer never saw. Made-up words (names, companies,
products, streets, towns, tickers) are split by a stable hash of the whole word (``split_of``: one
word in five is held out), so a held-out word never occurs as a word in any training example, which
``tests/reference`` checks, while both splits draw on the same letters and syllables: every token a
held-out name is made of is a token the model has been trained to read and to write. (Until
2026-11-29 the split was by onset: held-out words started with ``z``, ``j``, ``qu``, ``y`` or ``w``,
which no training word contained. That made the first token of every held-out name one the model
had almost never written, and greedy copies swapped it for a training letter: ``Zekriod`` came out
as ``Lekriod``. An unseen name is the test; an unseen alphabet is not one a real assistant faces.)
Real city names and event topics are partitioned by index. With ``open_slots`` (an option of the
recipe's second step, ``cite_tune --open-slots true``; off in the committed recipe), training also
fills the city, event-topic and e-mail-domain slots from open classes (``_TRAIN_CITIES``,
``_TRAIN_TOPICS``, made-up words and domains), so that the model learns to copy a held-out city,
topic or domain rather than recall one of a short trained list. Not in the
first step, where the same fillers delayed the forming of copying (docs/reference-model.md).

Phrasing templates are split the same way: ``pick_template`` keeps every fifth template of each
list for the held-out split. The trade-off is that held-out phrasings are only ~20% of the variety,
but the model never sees them, which is what "unseen phrasing" has to mean.

Everything here is immutable module-level data plus pure functions of an explicit ``random.Random``.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

__all__ = [
    "Split",
    "city",
    "company",
    "date_pair",
    "draw",
    "email",
    "event_title",
    "of_split",
    "person",
    "phone",
    "pick_template",
    "product",
    "split_of",
    "street",
    "syllable_word",
    "ticker",
    "time_pair",
]

Split = Literal["train", "heldout"]
T = TypeVar("T")

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "br", "dr", "gr", "kr", "st",
           "tr", "sh", "th", "ch", "pl", "fl", "h", "c", "sl", "pr", "z", "j", "qu", "y", "w")
# Real words the syllable grammar can also spell ("Can", "Lima", "Code"): never drawn as made-up
# words, or a held-out name could be a word every training prompt uses. Computed from the words in
# this package's string literals that ``draw``'s grammar produces; tests/reference checks for leaks.
_REAL_WORDS = frozenset("""
    baku bar based basis be been board bos boston both break broken brother busan cabin cache came
    can cape car cares case cases cave chapel chosen cite cited cites co code codes com come comes
    cores cos cover custom customer dakar data date dated de deliver demo dev did dim dir do doha
    don dozen drive drives faces fake far fatal fewer file files fire five for gal game gas gate
    gated give given gives go grade graded grader grades green gun had hamburg has have head her
    here hi hide hides him home human java june kilos label lace lagos lake lane las layer lead leak
    leave leaves legal len level like lima line linear lines litres live lives login los loses love
    made madrid make makes me mean meth method metres mi milan miles min mine mod mode model more
    motion name named names nan naples near nested never no node non none note notes nuke num pad
    paper paris path per person pipe place plan plane planes please plus postal prev price program
    pure question quito quote rated rates re read real red repo report retro rid rifle riga rio
    river role rome rope run sales same san save saved seville shape share shared shares shower side
    sister size slower so some son state stated states steal stone store studio sum take taken takes
    teacher teal team tel than the them then there these theta this those time times to together tok
    token ton tower trace trade travel tripod tunis valid vegas virus was wastes water we wear
    weather were wife wifi wipes wire wired with within woman won year yes yoga za zero
""".split())
_VOWELS = ("a", "e", "i", "o", "u", "ae", "io", "ea")
_CODAS = ("", "", "", "n", "r", "l", "s", "th", "v", "k", "m", "d")
_SURNAME_ENDS = ("", "", "son", "ova", "ez", "ski", "er", "ani", "ard", "en")

_REAL_CITIES = (
    "Oslo", "Lima", "Paris", "Berlin", "Madrid", "Rome", "Tokyo", "Seoul", "Cairo", "Nairobi",
    "Lagos", "Dublin", "Vienna", "Prague", "Warsaw", "Athens", "Lisbon", "Boston", "Chicago",
    "Denver", "Seattle", "Austin", "Toronto", "Montreal", "Sydney", "Perth", "Auckland", "Mumbai",
    "Delhi", "Bangkok", "Hanoi", "Manila", "Jakarta", "Istanbul", "Dubai", "Doha", "Riyadh",
    "Santiago", "Bogota", "Quito", "Havana", "Houston", "Phoenix", "Miami", "Atlanta", "Portland",
    "Helsinki", "Stockholm", "Copenhagen", "Brussels", "Amsterdam", "Zurich", "Geneva", "Munich",
    "Hamburg", "Milan", "Naples", "Seville", "Porto", "Krakow", "Budapest", "Bucharest", "Sofia",
    "Belgrade", "Zagreb", "Riga", "Tallinn", "Vilnius", "Kyiv", "Tbilisi", "Baku", "Tehran",
    "Karachi", "Dhaka", "Kathmandu", "Colombo", "Chennai", "Kolkata", "Osaka", "Kyoto", "Busan",
    "Taipei", "Shanghai", "Beijing", "Singapore", "Kuala Lumpur", "Cape Town", "Johannesburg",
    "Accra", "Dakar", "Tunis", "Casablanca", "Marrakesh", "Buenos Aires", "Montevideo",
    "San Diego", "Las Vegas", "New Orleans", "Mexico City", "Rio de Janeiro", "Sao Paulo",
    "Salt Lake City", "Los Angeles", "Hong Kong", "Tel Aviv", "Abu Dhabi", "St. Louis",
    "Vancouver", "Calgary", "Edinburgh", "Glasgow", "Cardiff", "Belfast", "Marseille", "Lyon",
)
# Training-only fillers (``open_slots``) for the slots held-out prompts fill from short real lists (cities,
# event topics). With only the 92 training cities and 20 topics there, the model memorised them instead
# of copying: held-out Bangkok came out "Bangokok", Zagreb "Zagreburg", "launch retro" "Research retro".
# Every word here hashes to the training split and none is a real city or topic of either split, so
# nothing held out leaks (tests/reference/test_pools.py).
_TRAIN_CITIES = tuple("""
    Valencia Bilbao Granada Nantes Lille Bordeaux Toulouse Strasbourg Antwerp Ghent Utrecht Leipzig Dresden
    Cologne Frankfurt Stuttgart Bremen Bologna Florence Venice Turin Genoa Verona Salzburg Graz Innsbruck
    Basel Lucerne Gdansk Lodz Brno Ostrava Bratislava Kosice Ljubljana Tirana Podgorica Thessaloniki Patras
    Ankara Antalya Bergen Trondheim Stavanger Malmo Uppsala Odense Tampere Turku Oulu Reykjavik Cork Galway
    Limerick Leeds Bristol Liverpool Manchester Sheffield Newcastle Nottingham Dundee Inverness Swansea Oxford
    Cambridge Brighton Plymouth Adelaide Hobart Darwin Wellington Christchurch Dunedin Quebec Winnipeg Regina
    Halifax Edmonton Boise Tucson Dallas Memphis Nashville Louisville Detroit Cleveland Pittsburgh Baltimore
    Raleigh Charlotte Orlando Tampa Wichita Spokane Sacramento Fresno Anchorage Honolulu Guadalajara Monterrey
    Puebla Cancun Medellin Cali Cartagena Caracas Maracaibo Guayaquil Cusco Asuncion Cordoba Mendoza Recife
    Fortaleza Curitiba Manaus Belem Brasilia Luanda Kinshasa Kampala Harare Maputo Windhoek Gaborone Durban
    Khartoum Algiers Oran Tripoli Alexandria Luxor Amman Damascus Basra Manama Jeddah Isfahan Tabriz Kabul
    Lahore Islamabad Jaipur Pune Hyderabad Ahmedabad Surat Kanpur Nagpur Indore Bhopal Patna Chittagong Yangon
    Vientiane Cebu Davao Surabaya Bandung Medan Penang Ipoh Shenzhen Chengdu Nanjing Hangzhou Tianjin Harbin
    Qingdao Kunming Lhasa Ulaanbaatar Almaty Astana Tashkent Samarkand Bishkek Dushanbe Yerevan Minsk Kharkiv
    Chisinau Novosibirsk Kazan Yekaterinburg Vladivostok Sapporo Fukuoka Kobe Hiroshima Daegu Kaohsiung
    Taichung Macau Dortmund Essen Leverkusen Mainz Heidelberg Freiburg Bonn Kassel Kiel Lubeck Eindhoven
    Groningen Maastricht Leiden Bruges Liege Salamanca Malaga Murcia Coimbra Braga Faro Avignon Montpellier
    Rennes Grenoble Dijon Reims Rouen Brest Nancy Metz Siena Parma Modena Padua Trieste Catania Lecce Split
    Zadar Dubrovnik Plovdiv Burgas Constanta Iasi Timisoara Debrecen Szeged Pecs Gyor Kaunas Klaipeda
    Daugavpils Pskov Tver Samara Perm Omsk Tomsk Ufa Batumi Kutaisi Mombasa Kisumu Zanzibar Dodoma Mwanza
    Blantyre Bamako Niamey Ouagadougou Abidjan Lome Cotonou Freetown Monrovia Conakry Banjul Nouakchott Fez
    Agadir Tangier Sfax Benghazi Aswan Suez Haifa Eilat Aqaba Salalah Sanaa Aden Mashhad Qom Herat Kandahar
    Multan Quetta Faisalabad Agra Amritsar Goa Mysore Madurai Trivandrum Vizag Sylhet Pokhara Kandy Jaffna
    Phuket Pattaya Hue Haiphong Iloilo Baguio Makassar Yogyakarta Denpasar Malacca Xiamen Fuzhou Suzhou Wuxi
    Ningbo Zhengzhou Nanning Guiyang Lanzhou Urumqi Hohhot Shenyang Changchun Ulsan Jeju Okinawa Niigata
    Kanazawa Nara Hakodate Cairns Townsville Geelong Ballarat Napier Nelson Rotorua Tauranga Whangarei Suva
    Apia Lae Honiara Vila Saskatoon Moncton Kelowna Kamloops Nanaimo Whitehorse Yellowknife Iqaluit Juneau
    Fairbanks Reno Ogden Amarillo Lubbock Waco Shreveport Mobile Jackson Macon Savannah Augusta Columbia
    Knoxville Chattanooga Lexington Dayton Akron Erie Rochester Syracuse Albany Hartford Burlington Duluth
    Fargo Bismarck Billings Missoula Bozeman Casper Lincoln Springfield Peoria Madison Milwaukee Flint Gary
    Evansville Merida Oaxaca Acapulco Leon Morelia Toluca Hermosillo Culiacan Durango Saltillo Ensenada
    Tampico Antigua Managua Belmopan Kingston Nassau Bridgetown Castries Roseau Paramaribo Georgetown Cayenne
    Piura Tucuman Bariloche Ushuaia Temuco Antofagasta Iquique Santos Goiania Natal Teresina
""".split()) + ('Port Said', 'Kota Kinabalu', 'Santa Fe', 'El Paso', 'Punta Arenas', 'Addis Ababa', 'Da Nang', 'La Paz')
_TRAIN_TOPICS = tuple("""
    audit compliance pricing analytics procurement payroll benefits recruiting infrastructure networking
    backend frontend mobile growth retention churn revenue forecast accounting treasury press branding content
    events facilities logistics shipping warehouse quality testing deployment incident migration architecture
    api database cloud devops diversity wellness safety sustainability travel hardware localization
    documentation community merger acquisition renewal licensing patent newsletter podcast campaign conference
    backlog standup pipeline billing invoicing refund rewards catalog supplier recycling energy solar wind
    battery sensor satellite navigation search ranking affiliate influencer photo accessibility usability ux
    copywriting ecommerce checkout payments fraud trust identity access keys secrets encryption backup
    recovery network firewall vpn email escalation triage postmortem capacity scaling performance latency
    indexing schema coaching volunteer charity grants curriculum exam grading archive catering fitness clinic
    pharmacy claims underwriting mortgage savings dividend earnings tender bid quote invoice
""".split())
_CITY_SUFFIXES = ("burg", "ville", "port", "ton", " Falls", " Springs", "ford", " Bay", "field", "mouth")
_DOMAINS_TRAIN = ("mail.com", "inbox.net", "post.org", "webmail.io", "example.com", "corp.net",
                  "fastmail.co", "letters.org")
_DOMAINS_HELDOUT = ("quickpost.dev", "yonder.net")
_TLDS = (".com", ".net", ".org", ".io", ".co", ".dev")
_COMPANY_SUFFIXES = ("Labs", "Systems", "Foods", "Group", "Works", "Studio", "Motors", "Bank",
                     "Health", "Logistics", "Energy", "Media")
_PRODUCT_NOUNS = ("Kettle", "Backpack", "Desk Lamp", "Headphones", "Water Bottle", "Blender",
                  "Notebook", "Yoga Mat", "Toaster", "Phone Case", "Keyboard", "Mouse", "Tent",
                  "Running Shoes", "Coffee Grinder", "Umbrella", "Monitor", "Chair", "Jacket",
                  "Speaker")
_STREET_TYPES = ("Street", "Road", "Avenue", "Lane", "Way", "Drive", "Court", "Place")
_TOPICS = ("budget", "roadmap", "design", "hiring", "launch", "quarterly", "security", "onboarding",
           "marketing", "sales", "product", "research", "finance", "support", "team", "board",
           "strategy", "release", "training", "partner", "customer", "data", "planning", "vendor",
           "legal")
_EVENT_KINDS = ("review", "sync", "meeting", "workshop", "retro", "call", "lunch", "kickoff",
                "demo", "check-in", "interview", "offsite")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")


def of_split(items: Sequence[T], split: Split) -> list[T]:
    """The items of ``split``: every fifth (index % 5 == 4) is held out, the rest is for training."""
    return [t for i, t in enumerate(items) if (i % 5 == 4) == (split == "heldout")]


def pick_template(rng: random.Random, templates: Sequence[str], split: Split) -> str:
    """Pick a template of ``split`` (see ``of_split``)."""
    return rng.choice(of_split(templates, split))


def split_of(word: str) -> Split:
    """The split a made-up word belongs to: held out when a stable hash of its lowercase form is 0 mod 5."""
    return "heldout" if zlib.crc32(word.lower().encode()) % 5 == 0 else "train"


def draw(split: Split, make: Callable[[], str]) -> str:
    """Call ``make`` until it returns a word of ``split`` (one try in five suffices for held-out, on average)."""
    while True:
        word = make()
        if split_of(word) == split and word.lower() not in _REAL_WORDS:
            return word


def _raw_word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


def syllable_word(rng: random.Random, split: Split, syllables: int = 2) -> str:
    """A pronounceable made-up capitalised word of ``split``."""
    return draw(split, lambda: _raw_word(rng, syllables))


def person(rng: random.Random, split: Split) -> str:
    """A full name like ``Brakel Tomason``; both words belong to ``split``."""
    first = syllable_word(rng, split, rng.choice((1, 2, 2, 3)))
    n = rng.choice((1, 2, 2))
    last = draw(split, lambda: _raw_word(rng, n) + rng.choice(_SURNAME_ENDS))
    return f"{first} {last}"


def city(rng: random.Random, split: Split, *, open_slots: bool = False) -> str:
    """A real city (every fifth one held out) or a made-up one whose own word belongs to ``split``.

    ``open_slots``: training also draws from ``_TRAIN_CITIES``, so that a city is something to copy,
    not to recall.
    """
    if rng.random() < 0.6:
        if split == "train" and open_slots and rng.random() < 0.6:
            return rng.choice(_TRAIN_CITIES)
        return rng.choice(of_split(_REAL_CITIES, split))
    n, suffix = rng.choice((1, 2)), rng.choice(_CITY_SUFFIXES)
    if suffix.startswith(" "):
        return syllable_word(rng, split, n) + suffix
    return draw(split, lambda: _raw_word(rng, n) + suffix)


def email(rng: random.Random, split: Split, name: str | None = None, *, open_slots: bool = False) -> str:
    """An address derived from ``name`` (or a fresh name of ``split``).

    ``open_slots``: half of the training addresses are at a made-up domain, not one of eight trained ones.
    """
    name = name or person(rng, split)
    first, last = name.lower().split(" ", 1)
    local = rng.choice((f"{first}.{last}", f"{first}{rng.randint(1, 99)}", f"{first[0]}{last}", first))
    if split == "train" and open_slots and rng.random() < 0.5:
        domain = syllable_word(rng, split, rng.choice((1, 2))).lower() + rng.choice(_TLDS)
    else:
        domain = rng.choice(_DOMAINS_HELDOUT + _DOMAINS_TRAIN if split == "heldout" else _DOMAINS_TRAIN)
    return f"{local.replace(' ', '')}@{domain}"


def phone(rng: random.Random) -> str:
    """A phone number in one of a few common layouts (numbers are not split: they are not entities)."""
    a, b, c = rng.randint(200, 999), rng.randint(100, 999), rng.randint(1000, 9999)
    return rng.choice((f"{a}-{b}-{c}", f"({a}) {b}-{c}", f"+1 {a} {b} {c}", f"{b}-{c}"))


def company(rng: random.Random, split: Split) -> str:
    """A company name like ``Velmor Labs``."""
    return f"{syllable_word(rng, split, rng.choice((1, 2)))} {rng.choice(_COMPANY_SUFFIXES)}"


def product(rng: random.Random, split: Split) -> str:
    """A product name: a brand of ``split`` and a common noun."""
    return f"{syllable_word(rng, split, rng.choice((1, 2)))} {rng.choice(_PRODUCT_NOUNS)}"


def street(rng: random.Random, split: Split) -> str:
    """A street address like ``42 Talvo Road``."""
    return f"{rng.randint(1, 999)} {syllable_word(rng, split, rng.choice((1, 2)))} {rng.choice(_STREET_TYPES)}"


def event_title(rng: random.Random, split: Split, *, open_slots: bool = False) -> str:
    """An event title like ``budget review``; topics are split by index, kinds are shared.

    ``open_slots``: half of the training titles take their topic from ``_TRAIN_TOPICS`` or a made-up
    word instead.
    """
    if split == "train" and open_slots and rng.random() < 0.5:
        topic = rng.choice(_TRAIN_TOPICS) if rng.random() < 0.7 else syllable_word(rng, split, rng.choice((1, 2))).lower()
    else:
        topic = rng.choice(of_split(_TOPICS, split))
    title = f"{topic} {rng.choice(_EVENT_KINDS)}"
    if rng.random() < 0.25:
        title += f" with {syllable_word(rng, split, 2)}"
    return title.capitalize() if rng.random() < 0.5 else title


def ticker(rng: random.Random, split: Split) -> str:
    """A 2-5 letter ticker of ``split`` (split by hash like made-up words)."""
    n = rng.randint(2, 5)
    return draw(split, lambda: "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(n)))


def date_pair(rng: random.Random) -> tuple[str, str]:
    """(text as a user might write it, ISO date the tool expects)."""
    y, m, d = rng.randint(2024, 2027), rng.randint(1, 12), rng.randint(1, 28)
    iso = f"{y:04d}-{m:02d}-{d:02d}"
    text = rng.choice((iso, iso, f"{MONTHS[m - 1]} {d}, {y}", f"{d} {MONTHS[m - 1]} {y}"))
    return text, iso


def time_pair(rng: random.Random) -> tuple[str, str]:
    """(time as written, HH:MM 24-hour)."""
    h, mi = rng.randint(7, 20), rng.choice((0, 0, 15, 30, 45, rng.randint(0, 59)))
    hhmm = f"{h:02d}:{mi:02d}"
    if rng.random() < 0.5:
        return hhmm, hhmm
    h12 = h - 12 if h > 12 else h
    suffix = "pm" if h >= 12 else "am"
    text = f"{h12}{suffix}" if mi == 0 and rng.random() < 0.5 else f"{h12}:{mi:02d} {suffix}"
    return text, hhmm
