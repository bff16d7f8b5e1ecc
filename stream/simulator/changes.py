"""Population changes in the stream: consent changes and stale re-sends, household moves,
main-member handovers, card closures and erasures."""

from __future__ import annotations

from collections.abc import Callable

from stream.simulator.config import CARDS, CONSENTS, Event
from stream.simulator.world import _Person, _World
from topologies import consent


class _Changes(_World):
    """The scheduled population changes of a run, each as the events it sends."""

    def _change(self, action: str, ts: int) -> list[Event] | None:
        """Run one scheduled change; None when there is nothing to act on yet (retry later)."""
        if action == "consent":
            return self._consent_change(ts)
        if action == "stale":
            return self._stale_consent(ts)
        if action == "move":
            return self._move(ts)
        if action == "role":
            return self._role_change(ts)
        if action == "close":
            return self._close(ts)
        if action == "erase":
            return self._erase(ts)
        raise ValueError(action)

    def _random_person(self, accept: Callable[[_Person], bool]) -> _Person | None:
        rng, people = self.rng, self.people
        for _ in range(500):
            person = people[rng.randrange(len(people))]
            if not person.erased and accept(person):
                return person
        return None

    def _consent_change(self, ts: int) -> list[Event]:
        rng, stats = self.rng, self.stats
        person = self._random_person(lambda p: True)
        if person is None:
            return []
        cid = person.customer_id
        current = self.consent.get(cid)
        source = rng.choices(("S-mobiili", "customer-service"), weights=(0.85, 0.15))[0]
        effective_at = ts - rng.randrange(0, 1500)
        if current is None:  # somebody without a record opts in for the first time
            record = {
                "customer_id": cid,
                "version": 1,
                "effective_at": effective_at,
                consent.PRODUCT_LEVEL_SERVICES: rng.random() < 0.8,
                consent.MARKETING_TARGETING: rng.random() < 0.4,
                consent.EXTERNAL_AUDIENCES: rng.random() < 0.15,
                consent.DIRECT_MARKETING: rng.random() < 0.3,
                consent.E_RECEIPTS: rng.random() < 0.25,
                "source": source,
            }
            if not any(record[f] for f in consent.FLAGS):
                record[consent.PRODUCT_LEVEL_SERVICES] = True
            stats.consent_opt_ins += 1
        else:
            flag = rng.choices(consent.FLAGS, weights=(0.4, 0.3, 0.08, 0.12, 0.1))[0]
            record = dict(current)
            record[flag] = not current[flag]
            record["version"] = current["version"] + 1
            record["effective_at"] = max(effective_at, current["effective_at"] + 1)
            record["source"] = source
            if current[flag]:
                stats.consent_revocations += 1
                if flag == "product_level_services":
                    stats.product_level_revocations.append(cid)
            else:
                stats.consent_opt_ins += 1
        history = self.history.setdefault(cid, [])
        history.append(record)
        if len(history) == 2:
            self.stale_candidates.append(cid)
        self.consent[cid] = record
        stats.consent_changes += 1
        return [self._event(CONSENTS, cid, dict(record), ts)]  # a copy: history stays intact

    def _stale_consent(self, ts: int) -> list[Event] | None:
        rng, candidates = self.rng, self.stale_candidates
        while candidates:
            i = rng.randrange(len(candidates))
            cid = candidates[i]
            if self.person_by_id[cid].erased:
                candidates[i] = candidates[-1]
                candidates.pop()
                continue
            older = rng.choice(self.history[cid][:-1])
            self.stats.stale_consents.append((cid, older["version"]))
            return [self._event(CONSENTS, cid, dict(older), ts)]
        return None

    def _move(self, ts: int) -> list[Event]:
        rng = self.rng
        person = self._random_person(lambda p: p.role == "MEMBER" and not p.late and bool(p.cards))
        if person is None:
            return []
        old = person.household_id
        self.households[old].remove(person)
        new = ""
        if rng.random() < 0.5:  # joins another household as a member
            for _ in range(500):
                other = self.people[rng.randrange(len(self.people))]
                if other.household_id != old and not other.erased:
                    new = other.household_id
                    break
        if new:
            person.role = "MEMBER"
        else:  # moves out and founds a household of their own
            new = self.spare_household_ids.pop()
            person.role = "MAIN_MEMBER"
            self.households[new] = []
        self.households[new].append(person)
        person.household_id = new
        self.stats.household_moves.append((person.customer_id, old, new))
        return [self._event(CARDS, c, self._card_record(c, person, ts), ts) for c in person.cards]

    def _role_change(self, ts: int) -> list[Event]:
        """The main member hands over to another member of the household (both keep cards)."""
        rng = self.card_rng
        candidates = [
            hh
            for hh, members in self.households.items()
            if len(members) > 1 and all(p.cards and not p.late for p in members)
        ]
        if not candidates:
            return []
        hh = candidates[rng.randrange(len(candidates))]
        members = self.households[hh]
        old = next(p for p in members if p.role == "MAIN_MEMBER")
        new = rng.choice([p for p in members if p is not old])
        old.role, new.role = "MEMBER", "MAIN_MEMBER"
        self.stats.role_changes.append((hh, old.customer_id, new.customer_id))
        return [
            self._event(CARDS, c, self._card_record(c, p, ts), ts)
            for p in (old, new)
            for c in p.cards
        ]

    def _close(self, ts: int) -> list[Event]:
        rng, cards = self.rng, self.open_cards
        for _ in range(500):
            if not cards:
                break
            card = cards[rng.randrange(len(cards))]
            person = self.card_owner[card]
            # A main member keeps at least one card, so that every household keeps its main
            # member in the card register.
            if person.late or (person.role == "MAIN_MEMBER" and len(person.cards) < 2):
                continue
            self._close_card(card)
            self.stats.closed_cards.append(card)
            return [self._event(CARDS, card, None, ts)]
        return []

    def _erase(self, ts: int) -> list[Event]:
        person = self._random_person(
            lambda p: (
                not p.late and (p.role == "MEMBER" or len(self.households[p.household_id]) == 1)
            )
        )
        if person is None:
            return []
        events = []
        for card in list(person.cards):
            self._close_card(card)
            events.append(self._event(CARDS, card, None, ts))
        members = self.households[person.household_id]
        members.remove(person)
        if not members:
            del self.households[person.household_id]
        person.erased = True
        self.consent.pop(person.customer_id, None)
        events.append(self._event(CONSENTS, person.customer_id, None, ts))
        self.stats.erased_customers.append(person.customer_id)
        return events
