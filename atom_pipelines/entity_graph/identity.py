"""Identity resolution for the graph: mail-native keys, and every merge (or refusal) a row.

THE rule, in the order it is applied:

1. **A person is an address.** Person keys are ``person:<normalized address>``; display names are attached to
   the address they came with. ``display_names[person]`` counts every name a ``person:`` row carried that is
   not just the address itself; the graph labels a person with the most frequent one (ties: alphabetical).
2. **Aliases are the only way two addresses become one person.** ``aliases`` (alias address -> canonical
   address, from ``ATOM_GRAPH_ALIASES``) maps ``person:<alias>`` to ``person:<canonical>`` everywhere. Chains
   (a -> b -> c) resolve to their end; a cycle is a ``ValueError`` naming its addresses. The alias's display
   names count for the canonical person, and every alias seen in the rows is one decision row (rule
   ``alias``, mailbox and message id ``""``, since it holds in every mailbox). Two addresses that share a
   display name are never merged: a name only ever maps a ``person-name:`` mention, never a ``person:`` key.
3. **A name is reduced to (given, family).** Accents are stripped (Unicode NFKD) and the name casefolded;
   e-mail addresses, a Lotus Notes tail (``/HOU/ECT``, ``@ENRON``), parenthesised, bracketed and angle-bracketed
   parts and quote marks are dropped; "Last, First [Middle]" becomes "First [Middle] Last"; titles (mr, ms, dr,
   ...), suffixes (jr, sr, ii, iii, iv, phd, ...) and single letters or initials ("J", "J.") are dropped.
   Given is the first token left, family the last when two or more are left. So "Vince Kaminski",
   "Kaminski, Vince", "Vince J Kaminski" and "Vince J. Kaminski" are all (vince, kaminski), and "Vince" is
   (vince, None). A name that leaves nothing, or a title with one name ("Mr. Kaminski", a family name
   alone), is unusable. A person's names for matching are the reductions of their display names plus the
   local part of each of their addresses when it has the shape first.last or first_last (a middle initial
   between is allowed): vince.kaminski@enron.com gives (vince, kaminski) even when no display name came with it.
4. **Only a correspondent, and only one.** A ``person-name:`` mention is a name extraction could not tie to a
   participant of its own message. Its candidates in mailbox M are M's correspondents: the persons (after
   aliases) with a header role (sender, to, cc) in any message of M. A (given, family) mention matches a
   candidate with a name of the same given and family (rule ``full_name``); a one-token mention matches a
   candidate whose *given* name it is (rule ``given_name``), never a family name, because a lone name in a
   greeting or sign-off ("Vince,", "Thanks, Vince") is how people write a first name. Exactly one matching
   candidate merges the mention into that person in that mailbox; none is refused ``no_correspondent``, two
   or more ``ambiguous`` (the candidates in the detail), a name that reduces to nothing ``unusable_name``.
   One match is still ``ambiguous`` when another correspondent's given name is a nickname or full form of
   the mention's (the ``nicknames`` dataset, one step: "Steve" where both Steve Hotte and Steven Harris
   write); nicknames only ever refuse, they never merge "Bob" into a Robert by themselves.
5. **A reviewer can undo a merge.** ``never_merge`` pairs (name, address): a merge of a mention whose reduced
   name equals the pair's reduced name into ``person:<address>`` (after aliases) is refused ``never_merge``,
   in every mailbox. It only turns merges into refusals: an ambiguous mention stays ambiguous.

Every ``person-name:`` row gets one decision, merged or refused, so the graph can show why a name did or did
not become a person; ``decisions`` are sorted, so the same rows give the same list.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nicknames import NickNamer

from atom_pipelines.extraction import keys
from atom_pipelines.extraction.outcomes import Role

MERGED, REFUSED = "merged", "refused"

#: A name reduced for matching: (given, family), family None for a one-token name.
ReducedName = tuple[str, str | None]

#: The roles that make a person a correspondent of the mailbox (they are in the message's headers).
HEADER_ROLES = frozenset({Role.SENDER.value, Role.TO.value, Role.CC.value})

#: Tokens that are not part of a person's name in the sense of the rule.
NAME_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv", "phd", "md", "esq", "cpa", "cfa", "mba", "jd"})
NAME_TITLES = frozenset({"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir"})

# The prefixes come from the key builders so that a change of key shape there cannot silently miss here.
_PERSON = keys.person_key("")
_PERSON_NAME = keys.person_name_key("")

_EMAIL = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
# Parenthesised, bracketed and angle-bracketed parts, a Notes domain ("@ENRON"), quote marks: one pass.
_NOT_NAME = re.compile(r'\([^)]*\)|\[[^\]]*\]|<[^>]*>|@\S*|["\u201c\u201d\u201e\u00ab\u00bb`]')
_TOKEN = re.compile(r"[^\W\d_]+(?:['\u2019-][^\W\d_]+)*")
_LOCAL_PART_NAME = re.compile(r"^([^\W\d_]{2,})[._](?:[^\W\d_][._])?([^\W\d_]{2,})$")


@dataclass(frozen=True)
class Decision:
    """One resolution decision: which mention, which person (None when refused), which rule, why."""

    mailbox: str  # "" for an alias decision (it holds in every mailbox)
    message_id: str  # "" for an alias decision
    mention_key: str  # "person-name:vince" or, for an alias, "person:vkamins@enron.com"
    mention_name: str
    decision: str  # MERGED or REFUSED
    person_key: str | None
    rule: str
    detail: str


@dataclass
class Resolution:
    # (mailbox, mention key) -> canonical person key, for the name mentions merged in that mailbox.
    name_merges: dict[tuple[str, str], str] = field(default_factory=dict)
    # person key -> canonical person key, from the configured aliases.
    aliases: dict[str, str] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    # canonical person key -> every display name seen with its address(es), with counts.
    display_names: dict[str, Counter] = field(default_factory=dict)

    def resolve(self, mailbox: str, entity_key: str) -> str:
        """The canonical key of an entity as mentioned in a mailbox (unchanged when nothing applies)."""
        if entity_key.startswith(_PERSON_NAME):
            return self.name_merges.get((mailbox, entity_key), entity_key)
        return self.aliases.get(entity_key, entity_key)

    def names(self, person_key: str) -> list[str]:
        """Every display name seen with the person's address(es), most frequent first (ties: alphabetical)."""
        counts = self.display_names.get(self.aliases.get(person_key, person_key), Counter())
        return sorted(counts, key=lambda name: (-counts[name], name))

    def label(self, person_key: str) -> str | None:
        """The name the graph shows for a person: the most frequent display name, None when none was seen."""
        names = self.names(person_key)
        return names[0] if names else None


@functools.lru_cache(maxsize=131_072)
def reduced_name(name: str) -> ReducedName | None:
    """(given, family) of a name as rule 3 of the module docstring says, or None when nothing usable is left."""
    if not name.isascii():
        name = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    text = name.casefold()
    text = _EMAIL.sub(" ", text).split("/", 1)[0]
    text = _NOT_NAME.sub(" ", text)
    parts = [_TOKEN.findall(part) for part in text.split(",")]
    # A part made only of suffixes ("Kaminski, Vince, Jr.", "Vince Kaminski, PhD") is not the "First" of
    # "Last, First": dropping it first keeps those names in their order.
    parts = [tokens for tokens in parts if any(t not in NAME_SUFFIXES and t not in NAME_TITLES for t in tokens)]
    if len(parts) > 1:
        parts = parts[1:] + parts[:1]
    written = [token for tokens in parts for token in tokens]
    tokens = [t for t in written if len(t) > 1 and t not in NAME_SUFFIXES and t not in NAME_TITLES]
    if not tokens or (len(tokens) == 1 and any(t in NAME_TITLES for t in written)):
        # "Mr. Kaminski" is a family name alone, which rule 4 never matches; calling it a given name would.
        return None
    return (tokens[0], tokens[-1] if len(tokens) > 1 else None)


def address_name(address: str) -> ReducedName | None:
    """(given, family) read from an address's local part of the shape first.last or first_last, else None."""
    match = _LOCAL_PART_NAME.match(address.rsplit("@", 1)[0])
    if match is None:
        return None
    given, family = match.groups()
    if {given, family} & (NAME_SUFFIXES | NAME_TITLES):
        return None
    return (given, family)


def resolve_identities(
    person_mentions: Iterable[Mapping[str, Any]],
    aliases: Mapping[str, str] = {},
    never_merge: Sequence[tuple[str, str]] = (),
) -> Resolution:
    """Resolve the person mentions (entity rows of type person: mailbox, message_id, entity_key, name, roles).

    ``aliases``: alias address -> canonical address, both normalized. ``never_merge``: (name, address) pairs a
    reviewer refused. The rule is the module docstring's. Raises ``ValueError`` for an alias cycle, a
    ``never_merge`` pair that could never match, and a row whose key is not a person key.
    """
    chains = _alias_chains(aliases)
    alias_keys = {keys.person_key(alias): keys.person_key(chain[-1]) for alias, chain in chains.items()}
    refused_merges = _refused_merges(never_merge, alias_keys)

    # One pass over the rows, a few dict operations each: at scale this loop is most of the cost, so it only
    # counts (address, name) pairs and collects keys; aliases, stripping and comparing run once per distinct value.
    pair_counts: dict[tuple[str, str], int] = {}
    correspondent_keys: dict[str, set[str]] = defaultdict(set)
    name_rows: list[tuple[str, str, str, str]] = []
    header_by_roles: dict[str, bool] = {}
    for row in person_mentions:
        entity_key = row["entity_key"]
        if entity_key.startswith(_PERSON):
            pair = (entity_key, row["name"] or "")
            pair_counts[pair] = pair_counts.get(pair, 0) + 1
            roles = row["roles"]
            header = header_by_roles.get(roles)
            if header is None:
                header = header_by_roles[roles] = not HEADER_ROLES.isdisjoint(roles.split(","))
            if header:
                correspondent_keys[row["mailbox"]].add(entity_key)
        elif entity_key.startswith(_PERSON_NAME):
            name_rows.append((row["mailbox"], row["message_id"], entity_key, row["name"] or ""))
        else:
            raise ValueError(
                f"person row with a key that is neither {_PERSON!r} nor {_PERSON_NAME!r}: {entity_key!r} "
                f"(message {row['message_id']!r} of mailbox {row['mailbox']!r})"
            )

    prefix_length = len(_PERSON)
    display_names: dict[str, Counter] = defaultdict(Counter)
    seen_aliases: set[str] = set()
    for (entity_key, written), count in pair_counts.items():
        person = alias_keys.get(entity_key, entity_key)
        if person != entity_key:
            seen_aliases.add(entity_key)
        name = written.strip()
        if name and name.strip("'\"<> ").lower() != entity_key[prefix_length:]:
            display_names[person][name] += count
    display_names = dict(display_names)
    if alias_keys:
        correspondents = {
            mailbox: {alias_keys.get(key, key) for key in persons} for mailbox, persons in correspondent_keys.items()
        }
    else:
        correspondents = correspondent_keys
    matcher = _Matcher(display_names, alias_keys, correspondents, refused_merges)
    resolution = Resolution(aliases=alias_keys, display_names=display_names)
    for alias_key in seen_aliases:
        chain = chains[alias_key[prefix_length:]]
        via = f" via {' -> '.join(chain[1:-1])}" if len(chain) > 2 else ""
        detail = f"configured alias of {chain[-1]}{via}"
        resolution.decisions.append(
            Decision("", "", alias_key, chain[0], MERGED, alias_keys[alias_key], "alias", detail)
        )
    for mailbox, message_id, mention_key, mention_name in name_rows:
        decision, person, rule, detail = matcher.decide(mailbox, mention_key)
        if person is not None:
            resolution.name_merges[(mailbox, mention_key)] = person
        resolution.decisions.append(
            Decision(mailbox, message_id, mention_key, mention_name, decision, person, rule, detail)
        )
    resolution.decisions.sort(key=_decision_order)
    return resolution


class _Matcher:
    """Rule 4: every correspondent indexed once by their names; a mention's candidates are the persons with its
    name that are correspondents of its mailbox (an index per mailbox would repeat each person in every mailbox
    they write to). One answer per (mailbox, mention key)."""

    def __init__(
        self,
        display_names: Mapping[str, Counter],
        alias_keys: Mapping[str, str],
        correspondents: Mapping[str, set[str]],
        refused_merges: set[tuple[ReducedName, str]],
    ) -> None:
        self._correspondents = correspondents
        self._refused_merges = refused_merges
        addresses: dict[str, list[str]] = defaultdict(list)
        for alias_key, person in alias_keys.items():
            addresses[person].append(alias_key[len(_PERSON) :])
        self._by_full_name: dict[ReducedName, set[str]] = defaultdict(set)
        self._by_given_name: dict[str, set[str]] = defaultdict(set)
        for person in set().union(*correspondents.values()):
            names = [reduced_name(name) for name in display_names.get(person, ())]
            names += [address_name(address) for address in (person[len(_PERSON) :], *addresses.get(person, ()))]
            for name in names:
                if name is not None:
                    self._by_given_name[name[0]].add(person)
                    if name[1] is not None:
                        self._by_full_name[name].add(person)
        self._answers: dict[tuple[str, str], tuple[str, str | None, str, str]] = {}

    def _variant_rivals(self, given: str, family: str | None, mailbox: str) -> set[str]:
        """Correspondents whose given name is a nickname or full form of ``given`` (one step in the
        ``nicknames`` dataset: steve -> steven, stephen; steven -> steve, stevie), with the same family name
        when there is one. Only ever a reason to refuse: a nickname never merges by itself."""
        variants = _name_variants(given)
        if family is None:
            found = set().union(*(self._by_given_name.get(v, set()) for v in variants))
        else:
            found = set().union(*(self._by_full_name.get((v, family), set()) for v in variants))
        return found & self._correspondents.get(mailbox, set())

    def decide(self, mailbox: str, mention_key: str) -> tuple[str, str | None, str, str]:
        answer = self._answers.get((mailbox, mention_key))
        if answer is None:
            answer = self._answers[(mailbox, mention_key)] = self._decide(mailbox, mention_key)
        return answer

    def _decide(self, mailbox: str, mention_key: str) -> tuple[str, str | None, str, str]:
        # The key's own name (whitespace-collapsed and casefolded, commas kept) decides, so every row of one
        # key in one mailbox gets the same answer and name_merges stays one entry per key.
        written = mention_key[len(_PERSON_NAME) :]
        reduced = reduced_name(written)
        if reduced is None:
            detail = f"{written!r} leaves no given name once titles, suffixes and initials are dropped"
            return REFUSED, None, "unusable_name", detail
        given, family = reduced
        if family is None:
            rule, named, wanted = "given_name", self._by_given_name.get(given), f"the given name {given!r}"
        else:
            rule, named, wanted = "full_name", self._by_full_name.get(reduced), f"the name ({given}, {family})"
        candidates = named & self._correspondents.get(mailbox, set()) if named else set()
        if not candidates:
            return REFUSED, None, "no_correspondent", f"no correspondent of {mailbox} has {wanted}"
        if len(candidates) > 1:
            detail = f"{len(candidates)} correspondents of {mailbox} have {wanted}: " + ", ".join(sorted(candidates))
            return REFUSED, None, "ambiguous", detail
        (person,) = candidates
        rivals = self._variant_rivals(given, family, mailbox) - {person}
        if rivals:
            # "Steve" in Steven Harris's own mailbox, where Steve Hotte also writes: the name names one of
            # them exactly, but may be the other's nickname, so it is not unambiguous evidence.
            detail = f"{person} has {wanted}, but it is also a nickname or full form of the given name of " + ", ".join(
                sorted(rivals)
            )
            return REFUSED, None, "ambiguous", detail
        if (reduced, person) in self._refused_merges:
            return REFUSED, None, "never_merge", f"a reviewer refused {wanted} as {person}"
        return MERGED, person, rule, f"the one correspondent of {mailbox} with {wanted}"


@functools.cache
def _nicknamer() -> NickNamer:
    return NickNamer()  # reads the package's hand-curated names.csv once


@functools.lru_cache(maxsize=65_536)
def _name_variants(given: str) -> frozenset[str]:
    namer = _nicknamer()
    return frozenset(namer.nicknames_of(given) | namer.canonicals_of(given)) - {given}


def _alias_chains(aliases: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """alias address -> (alias, every address it points through, canonical address); a cycle raises."""
    chains: dict[str, tuple[str, ...]] = {}
    for alias, target in aliases.items():
        chain = [alias]
        while target in aliases:
            if target in chain:
                cycle = " -> ".join([*chain[chain.index(target) :], target])
                raise ValueError(f"aliases form a cycle ({cycle}): no address in it can be the canonical one")
            chain.append(target)
            target = aliases[target]
        chains[alias] = (*chain, target)
    return chains


def _refused_merges(
    never_merge: Sequence[tuple[str, str]], alias_keys: Mapping[str, str]
) -> set[tuple[ReducedName, str]]:
    refused: set[tuple[ReducedName, str]] = set()
    for name, address in never_merge:
        reduced = reduced_name(name)
        normalized = keys.normalize_address(address)
        # A pair that can never match would look like an undo that was applied while it undid nothing.
        if reduced is None:
            raise ValueError(f"never_merge name {name!r} (for {address!r}) reduces to no usable name")
        if normalized is None:
            raise ValueError(f"never_merge address {address!r} (for {name!r}) is not an address")
        person = keys.person_key(normalized)
        refused.add((reduced, alias_keys.get(person, person)))
    return refused


def _decision_order(decision: Decision) -> tuple[str, ...]:
    return (
        decision.mailbox,
        decision.message_id,
        decision.mention_key,
        decision.mention_name,
        decision.decision,
        decision.person_key or "",
        decision.rule,
        decision.detail,
    )
