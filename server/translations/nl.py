"""Dutch texts of the dashboard, written next to their English msgids.

`python server/translations/nl.py` regenerates `nl/LC_MESSAGES/messages.po` and `.mo` from
`messages.pot` (extract it first, see babel.cfg); the compiled catalog is committed, so running the
server needs no build step.
"""
from __future__ import annotations

NL: dict[str, str | tuple[str, str]] = {
    "Too many failed attempts. Try again in %(minutes)d minutes.":
        "Te veel mislukte pogingen. Probeer het over %(minutes)d minuten opnieuw.",
    "Unknown username or wrong password.": "Onbekende gebruikersnaam of onjuist wachtwoord.",
    "Unknown language.": "Onbekende taal.",
    "Your role does not give access to this page.": "Je rol geeft geen toegang tot deze pagina.",
    "Enter a date and time.": "Vul een datum en tijd in.",
    "Enter a date and time such as 2026-11-23 09:00.":
        "Vul een datum en tijd in, zoals 2026-11-23 09:00.",
    "A room needs a code, such as 2.14.": "Een lokaal heeft een code nodig, zoals 2.14.",
    "At most 64 characters.": "Hoogstens 64 tekens.",
    "This school has a room with this code already.":
        "Deze school heeft al een lokaal met deze code.",
    "Room %(code)s added.": "Lokaal %(code)s toegevoegd.",
    "Choose a gateway.": "Kies een gateway.",
    "A segment needs a name.": "Een segment heeft een naam nodig.",
    "This gateway has a segment with this name already.":
        "Deze gateway heeft al een segment met deze naam.",
    "Give at least one network, such as 10.1.2.0/24.":
        "Geef minstens één netwerk op, zoals 10.1.2.0/24.",
    "A segment serves at least one room.": "Een segment hoort bij minstens één lokaal.",
    "Segment %(name)s added.": "Segment %(name)s toegevoegd.",
    "Segment removed.": "Segment verwijderd.",
    "Unknown format.": "Onbekend formaat.",
    "Choose a file to import.": "Kies een bestand om te importeren.",
    "Unknown service: %(id)s": "Onbekende dienst: %(id)s",
    "Blocked services saved.": "Geblokkeerde diensten opgeslagen.",
    "Write the text in this language too.": "Schrijf de tekst ook in deze taal.",
    "At most %(n)d characters.": "Hoogstens %(n)d tekens.",
    "Reminder saved.": "Herinnering opgeslagen.",
    "Use 2 to 150 letters, digits or . _ @ -": "Gebruik 2 tot 150 letters, cijfers of . _ @ -",
    "This username is taken.": "Deze gebruikersnaam is al in gebruik.",
    "This teacher code belongs to someone else.": "Deze docentcode hoort bij iemand anders.",
    "Unknown role.": "Onbekende rol.",
    "A password needs at least %(n)d characters.": "Een wachtwoord heeft minstens %(n)d tekens.",
    "A new login needs a password.": "Een nieuwe login heeft een wachtwoord nodig.",
    "Give at least a name, a username or a teacher code.":
        "Geef minstens een naam, een gebruikersnaam of een docentcode.",
    "%(name)s added.": "%(name)s toegevoegd.",
    "You cannot remove your own IT role or disable yourself.":
        "Je kunt je eigen ICT-rol niet weghalen en jezelf niet uitschakelen.",
    "%(name)s saved.": "%(name)s opgeslagen.",
    "Choose the school, a room or a group.": "Kies de school, een lokaal of een groep.",
    "Choose a room.": "Kies een lokaal.",
    "Choose a group.": "Kies een groep.",
    "Exception granted.": "Uitzondering toegekend.",
    "No such lesson.": "Deze les bestaat niet.",
    "Choose the rest of the lesson, 10, 15 or 30 minutes.":
        "Kies de rest van de les, 10, 15 of 30 minuten.",
    "You may not grant this exception.": "Je mag deze uitzondering niet toekennen.",
    "No such exception.": "Deze uitzondering bestaat niet.",
    "You may not revoke this exception.": "Je mag deze uitzondering niet intrekken.",
    "The date must look like 2026-11-23.": "De datum moet eruitzien als 2026-11-23.",
    "all social media": "alle sociale media",
    "whole school": "hele school",
    "students": "leerlingen",
    "staff": "personeel",
    "always": "altijd",
    "personal data": "persoonsgegevens",
    "photo or video": "foto of video",
    "mentions the school": "noemt de school",
    "insulting words": "beledigende woorden",
    "school matters": "schoolzaken",
    "This form has expired or did not come from this site (CSRF check). Reload the page and try "
    "again.":
        "Dit formulier is verlopen of kwam niet van deze site (CSRF-controle). Laad de pagina "
        "opnieuw en probeer het nog eens.",
    "room %(code)s": "lokaal %(code)s",
    "group %(name)s": "groep %(name)s",
    "lesson": "les",
    "Skip to content": "Naar de inhoud",
    "Sign out": "Uitloggen",
    "Main": "Hoofdmenu",
    "Now": "Nu",
    "Week": "Week",
    "Exceptions": "Uitzonderingen",
    "Audit log": "Logboek",
    "Rooms": "Lokalen",
    "Segments": "Segmenten",
    "Gateways": "Gateways",
    "Timetable": "Rooster",
    "Services": "Diensten",
    "Reminders": "Herinneringen",
    "People": "Mensen",
    "Not allowed": "Niet toegestaan",
    "Not found": "Niet gevonden",
    "Bad request": "Ongeldig verzoek",
    "Too many requests": "Te veel verzoeken",
    "Busy": "Druk",
    "You were signed out after %(minutes)d minutes without activity.":
        "Je bent afgemeld na %(minutes)d minuten zonder activiteit.",
    "Enter a date between the years %(first)d and %(last)d.":
        "Vul een datum in tussen de jaren %(first)d en %(last)d.",
    "A value you entered is too long or out of range; nothing was changed.":
        "Een waarde die je invulde is te lang of valt buiten het bereik; er is niets veranderd.",
    "The server is very busy right now and nothing was changed. Try again in a few seconds.":
        "De server is nu erg druk en er is niets veranderd. Probeer het over een paar seconden "
        "opnieuw.",
    "Back to the start page": "Terug naar de startpagina",
    "Sign in": "Inloggen",
    "Username": "Gebruikersnaam",
    "Password": "Wachtwoord",
    "No role yet": "Nog geen rol",
    "Your account has no role. Ask IT to give you the teacher, leader or IT role.":
        "Je account heeft geen rol. Vraag ICT om je de rol docent, schoolleiding of ICT te geven.",
    "Name": "Naam",
    "Teacher code": "Docentcode",
    "As in the timetable, such as JANS": "Zoals in het rooster, bijvoorbeeld JANS",
    "Leave empty for someone who does not sign in": "Leeg laten voor iemand die niet inlogt",
    "New password": "Nieuw wachtwoord",
    "At least 10 characters": "Minstens 10 tekens",
    "leave empty to keep it": "leeg laten om het te houden",
    "Roles": "Rollen",
    "teacher": "docent",
    "leader": "schoolleiding",
    "IT": "ICT",
    "Active (may sign in)": "Actief (mag inloggen)",
    "Save": "Opslaan",
    "Add person": "Persoon toevoegen",
    "New enrolment command": "Nieuwe aanmeldopdracht",
    "Run this once on the gateway within 24 hours. The token works once and is not shown again.":
        "Voer dit binnen 24 uur één keer uit op de gateway. Het token werkt één keer en wordt "
        "niet opnieuw getoond.",
    "Copy": "Kopiëren",
    "Gateway %(name)s": "Gateway %(name)s",
    "Id": "Id",
    "Enrolled": "Aangemeld",
    "not yet": "nog niet",
    "Last contact": "Laatste contact",
    "never": "nooit",
    "online": "online",
    "offline": "offline",
    "Agent version": "Agentversie",
    "Policy applied": "Toegepast beleid",
    "latest": "nieuwste",
    "latest is %(v)s": "nieuwste is %(v)s",
    "Policy too large": "Beleid te groot",
    "Too large to send: the policy is %(size)s KiB, agents read at most %(limit)s KiB. Split the "
    "segments over more gateways or shorten the policy horizon.":
        "Te groot om te versturen: het beleid is %(size)s KiB, agents lezen hoogstens %(limit)s "
        "KiB. Verdeel de segmenten over meer gateways of maak de beleidshorizon korter.",
    "New enrolment token": "Nieuw aanmeldtoken",
    "rooms": "lokalen",
    "%(num)d blocked attempt": ("%(num)d geblokkeerde poging", "%(num)d geblokkeerde pogingen"),
    "No segments yet.": "Nog geen segmenten.",
    "Blocked attempts per service, last %(n)d days":
        "Geblokkeerde pogingen per dienst, laatste %(n)d dagen",
    "Counts per segment, service and hour only: nothing about who or which device.":
        "Alleen tellingen per segment, dienst en uur: niets over wie of welk apparaat.",
    "Service": "Dienst",
    "Count": "Aantal",
    "No counts reported.": "Geen tellingen ontvangen.",
    "Gateway %(name)s created": "Gateway %(name)s aangemaakt",
    "Gateway": "Gateway",
    "Policy": "Beleid",
    "latest applied": "nieuwste toegepast",
    "not applied yet": "nog niet toegepast",
    "No gateways yet.": "Nog geen gateways.",
    "Add a gateway": "Gateway toevoegen",
    'Such as "main building"': "Bijvoorbeeld \"hoofdgebouw\"",
    "Create gateway": "Gateway aanmaken",
    "People and roles": "Mensen en rollen",
    "Actions": "Acties",
    "disabled": "uitgeschakeld",
    "no login": "geen login",
    "Edit": "Bewerken",
    "Add a person": "Persoon toevoegen",
    "Reminder %(article)s": "Herinnering %(article)s",
    "Audience": "Doelgroep",
    "Trigger": "Aanleiding",
    "Text": "Tekst",
    "Shown by the extension": "Getoond door de extensie",
    "Preview": "Voorbeeld",
    "As the browser extension shows it before a post is sent.":
        "Zoals de browserextensie het toont voordat een bericht wordt geplaatst.",
    "Reminder texts": "Teksten van herinneringen",
    "The browser extension shows these before someone posts. Edit them per article and language.":
        "De browserextensie toont deze voordat iemand iets plaatst. Bewerk ze per artikel en taal.",
    "Article": "Artikel",
    "Room": "Lokaal",
    "Blocked now": "Nu geblokkeerd",
    "none": "geen",
    "policy not applied yet": "beleid nog niet toegepast",
    "up to date": "bijgewerkt",
    "No rooms yet.": "Nog geen lokalen.",
    "Add a room": "Lokaal toevoegen",
    "Code": "Code",
    "As in the timetable, such as 2.14": "Zoals in het rooster, bijvoorbeeld 2.14",
    "Name (optional)": "Naam (optioneel)",
    "Add room": "Lokaal toevoegen",
    "Network segments": "Netwerksegmenten",
    "Segment": "Segment",
    "Networks": "Netwerken",
    "Remove segment %(name)s?": "Segment %(name)s verwijderen?",
    "Remove segment %(name)s": "Segment %(name)s verwijderen",
    "Remove": "Verwijderen",
    "Add a segment": "Segment toevoegen",
    "Create a gateway first.": "Maak eerst een gateway aan.",
    'Such as "wing B wifi" or "VLAN 214"': "Bijvoorbeeld \"wifi vleugel B\" of \"VLAN 214\"",
    "Networks (CIDR, IPv4 or IPv6, one per line)":
        "Netwerken (CIDR, IPv4 of IPv6, één per regel)",
    "Such as 10.2.14.0/24 and 2001:db8:214::/64": "Bijvoorbeeld 10.2.14.0/24 en 2001:db8:214::/64",
    "Rooms (codes, separated by commas)": "Lokalen (codes, gescheiden door komma's)",
    "New codes create new rooms": "Nieuwe codes maken nieuwe lokalen aan",
    "Add segment": "Segment toevoegen",
    "Services blocked during lessons": "Diensten die tijdens lessen geblokkeerd zijn",
    "Ticked services are blocked on classroom networks during lessons, unless an exception "
    "allows them.":
        "Aangevinkte diensten zijn tijdens lessen geblokkeerd op de lokaalnetwerken, tenzij een "
        "uitzondering ze toestaat.",
    "Import a timetable": "Rooster importeren",
    "iCalendar, Zermelo (appointments JSON), WebUntis (getTimetable JSON) or CSV. A file with an "
    "error imports nothing.":
        "iCalendar, Zermelo (appointments-JSON), WebUntis (getTimetable-JSON) of CSV. Een bestand "
        "met een fout importeert niets.",
    "Nothing was imported.": "Er is niets geïmporteerd.",
    "Imported": "Geïmporteerd",
    "created": "nieuw",
    "updated": "gewijzigd",
    "cancelled": "uitgevallen",
    "removed": "verwijderd",
    "lessons that block": "lessen die blokkeren",
    "Notes": "Opmerkingen",
    "File": "Bestand",
    "Format": "Formaat",
    "recognise from the file": "herkennen aan het bestand",
    "Import": "Importeren",
    "Filter the audit log": "Logboek filteren",
    "Who": "Wie",
    "everyone": "iedereen",
    "What": "Wat",
    "everything": "alles",
    "From": "Vanaf",
    "Until": "Tot en met",
    "Filter": "Filteren",
    "%(num)d event": ("%(num)d gebeurtenis", "%(num)d gebeurtenissen"),
    "When": "Wanneer",
    "Object": "Object",
    "Details": "Details",
    "No events match.": "Geen gebeurtenissen gevonden.",
    "Pages": "Pagina's",
    "Newer": "Nieuwer",
    "Older": "Ouder",
    "Active exceptions": "Actieve uitzonderingen",
    "by %(who)s": "door %(who)s",
    "ends in": "eindigt over",
    "No exception is active right now: social media is blocked in every lesson.":
        "Er is nu geen uitzondering actief: sociale media zijn in elke les geblokkeerd.",
    "Planned": "Gepland",
    "New exception": "Nieuwe uitzondering",
    "For events such as an open day or a project week: social media is allowed in the chosen "
    "scope from start to end.":
        "Voor gebeurtenissen zoals een open dag of een projectweek: sociale media zijn van begin "
        "tot eind toegestaan in het gekozen bereik.",
    "Scope": "Bereik",
    "Whole school": "Hele school",
    "One room": "Eén lokaal",
    "One group": "Eén groep",
    "Room (for scope room)": "Lokaal (bij bereik lokaal)",
    "Group (for scope group)": "Groep (bij bereik groep)",
    "Start": "Begin",
    "End": "Einde",
    "(none chosen: all)": "(niets gekozen: alle)",
    "Reason (optional)": "Reden (optioneel)",
    "Grant exception": "Uitzondering toekennen",
    "room": "lokaal",
    "Room %(code)s has no network segment: lesfocus blocks nothing there.":
        "Lokaal %(code)s heeft geen netwerksegment: lesfocus blokkeert daar niets.",
    "Gateway %(name)s is offline": "Gateway %(name)s is offline",
    "last contact %(when)s": "laatste contact %(when)s",
    "Waiting for gateway %(name)s: the change is not confirmed yet":
        "Wacht op gateway %(name)s: de wijziging is nog niet bevestigd",
    "Allowed, confirmed by the gateway at %(time)s":
        "Toegestaan, bevestigd door gateway om %(time)s",
    "Blocked, confirmed by the gateway at %(time)s":
        "Geblokkeerd, bevestigd door gateway om %(time)s",
    "Allowed, confirmed by the gateway": "Toegestaan, bevestigd door gateway",
    "Blocked, confirmed by the gateway": "Geblokkeerd, bevestigd door gateway",
    "Room %(code)s": "Lokaal %(code)s",
    "All social media blocked until %(time)s": "Alle sociale media geblokkeerd tot %(time)s",
    "All social media blocked": "Alle sociale media geblokkeerd",
    "All except %(names)s blocked until %(time)s":
        "Alle behalve %(names)s geblokkeerd tot %(time)s",
    "All except %(names)s blocked": "Alle behalve %(names)s geblokkeerd",
    "%(names)s blocked until %(time)s": "%(names)s geblokkeerd tot %(time)s",
    "%(names)s blocked": "%(names)s geblokkeerd",
    "All social media allowed until %(time)s": "Alle sociale media toegestaan tot %(time)s",
    "All social media allowed": "Alle sociale media toegestaan",
    "All except %(names)s allowed until %(time)s":
        "Alle behalve %(names)s toegestaan tot %(time)s",
    "All except %(names)s allowed": "Alle behalve %(names)s toegestaan",
    "%(names)s allowed until %(time)s": "%(names)s toegestaan tot %(time)s",
    "%(names)s allowed": "%(names)s toegestaan",
    "Allowed now": "Nu toegestaan",
    "Allow which services?": "Welke diensten toestaan?",
    "e.g. video for the assignment": "bijv. video voor de opdracht",
    "Allow for how long?": "Hoe lang toestaan?",
    "Rest of the lesson": "Rest van de les",
    "%(n)d min": "%(n)d min",
    "You have no lesson right now.": "Je hebt nu geen les.",
    "Next lesson": "Volgende les",
    "No further lessons planned.": "Geen lessen meer gepland.",
    "Your week": "Je week",
    "Week of %(day)s": "Week van %(day)s",
    "Weeks": "Weken",
    "Previous week": "Vorige week",
    "This week": "Deze week",
    "Next week": "Volgende week",
    "today": "vandaag",
    "now": "nu",
    "No lessons": "Geen lessen",
    "You may grant exceptions only for lessons you teach yourself.":
        "Je mag alleen uitzonderingen toekennen voor lessen die je zelf geeft.",
    "Choose services that the school blocks.": "Kies diensten die de school blokkeert.",
    "The reason is too long (at most 200 characters).":
        "De reden is te lang (hoogstens 200 tekens).",
    "This lesson is over or cancelled.": "Deze les is voorbij of uitgevallen.",
    "The end must be after the start and still to come.":
        "Het einde moet na het begin liggen en nog niet voorbij zijn.",
    # Queued timetable imports (issue 10)
    "queued": "in de wachtrij",
    "running": "bezig",
    "done": "klaar",
    "failed": "mislukt",
    "The import did not finish because of a problem in lesfocus, not in the file; the worker's "
    "log has the details. Try again, or ask the server's administrator.":
        "De import is niet afgemaakt door een probleem in lesfocus, niet in het bestand; het log "
        "van de worker vertelt meer. Probeer het opnieuw of vraag het de beheerder van de server.",
    "Recent imports": "Recente imports",
    "Uploaded": "Geüpload",
    "By": "Door",
    "State": "Status",
    "State:": "Status:",
    "Timetable import": "Roosterimport",
    "uploaded %(when)s by %(who)s": "geüpload %(when)s door %(who)s",
    "waiting for the worker; this page refreshes by itself.":
        "wacht op de worker; deze pagina ververst vanzelf.",
    "the worker is importing the file since %(when)s; this page refreshes by itself.":
        "de worker importeert het bestand sinds %(when)s; deze pagina ververst vanzelf.",
    "No worker has picked this file up yet. Check that `lesfocus worker` runs on the server.":
        "Nog geen worker heeft dit bestand opgepakt. "
        "Kijk of `lesfocus worker` op de server draait.",
    "Refresh": "Verversen",
    "Import another file": "Nog een bestand importeren",
    # Messages after a grant, "+5 min", "Stop" or a cancellation: the state after it (issue 14).
    "Room %(code)s: %(state)s": "Lokaal %(code)s: %(state)s",
    "%(action)s Now: %(state)s": "%(action)s Nu: %(state)s",
    "%(action)s From %(time)s: %(state)s": "%(action)s Vanaf %(time)s: %(state)s",
    "Still in force: the exception for %(scopes)s.":
        "Nog van kracht: de uitzondering voor %(scopes)s.",
    "Exception stopped.": "Uitzondering gestopt.",
    "Planned exception cancelled.": "Geplande uitzondering geannuleerd.",
    "Exception extended to %(time)s.": "Uitzondering verlengd tot %(time)s.",
    "Exception extended to %(time)s, the end of the lesson.":
        "Uitzondering verlengd tot %(time)s, het einde van de les.",
    "This exception lasts until the end of the lesson already.":
        "Deze uitzondering loopt al tot het einde van de les.",
    "This exception was stopped already.": "Deze uitzondering is al gestopt.",
    "This exception is over already.": "Deze uitzondering is al voorbij.",
    "You may not change this exception.": "Je mag deze uitzondering niet wijzigen.",
    "Stop": "Stoppen",
    "Cancel": "Annuleren",
    "+%(n)d min": "+%(n)d min",
    "Plan an exception": "Uitzondering plannen",
    "Whole lesson": "Hele les",
    "First %(n)d min": "Eerste %(n)d min",
    "Only later lessons of this week can get a planned exception.":
        "Alleen voor latere lessen van deze week kun je een uitzondering plannen.",
    "Exception planned for %(subject)s, %(time)s.":
        "Uitzondering gepland voor %(subject)s, %(time)s.",
    # The leader's exception: in words first, then confirmed (issue 14).
    "Choose at least one service.": "Kies minstens één dienst.",
    "Choose all social media or some services.":
        "Kies alle sociale media of alleen sommige diensten.",
    "today %(span)s": "vandaag %(span)s",
    "tomorrow %(span)s": "morgen %(span)s",
    "All social media": "Alle sociale media",
    "in the whole school": "in de hele school",
    "in room %(code)s": "in lokaal %(code)s",
    "for group %(name)s": "voor groep %(name)s",
    "%(what)s allowed %(where)s, %(when)s": "%(what)s toegestaan %(where)s, %(when)s",
    "Check what the exception will do and confirm it again.":
        "Bekijk wat de uitzondering doet en bevestig opnieuw.",
    "That exception cannot be extended (any more); check the overview.":
        "Die uitzondering kan niet (meer) verlengd worden; bekijk het overzicht.",
    "Exception extended: %(effect)s.": "Uitzondering verlengd: %(effect)s.",
    "Exception granted: %(effect)s.": "Uitzondering toegekend: %(effect)s.",
    "This opens social media in every lesson of the school. Grant it only when that is what "
    "you mean.":
        "Dit opent sociale media in elke les van de school. Ken haar alleen toe als je dat "
        "echt bedoelt.",
    "It overlaps with:": "Dit overlapt met:",
    "Extend this one instead": "Liever deze verlengen",
    "Grant a new exception anyway": "Toch een nieuwe uitzondering toekennen",
    "Yes, grant for the whole school": "Ja, toekennen voor de hele school",
    "Change": "Wijzigen",
    "— choose —": "— kies —",
    "Only these services:": "Alleen deze diensten:",
    "Review": "Bekijken",
    "LESFOCUS_PUBLIC_URL is not set on the server, so this command uses the address of this page. "
    "Set it to the address the gateways reach the server on (such as "
    "https://lesfocus.school.example) and make a new token.":
        "LESFOCUS_PUBLIC_URL is niet ingesteld op de server, dus dit commando gebruikt het adres "
        "van deze pagina. Stel het in op het adres waarop de gateways de server bereiken (zoals "
        "https://lesfocus.school.example) en maak een nieuw token.",
    "You chose all social media and some services: choose one of the two.":
        "Je koos alle sociale media én enkele diensten: kies een van de twee.",
    # Alerts (server/alerts.py, it/_alerts.html)
    "Gateway %(name)s is offline during lessons": "Gateway %(name)s is offline tijdens de lessen",
    "Gateway %(name)s does not apply the current policy":
        "Gateway %(name)s past het actuele beleid niet toe",
    "Gateway %(name)s runs an expired policy and blocks nothing":
        "Gateway %(name)s draait een verlopen beleid en blokkeert niets",
    "Timetable source %(name)s keeps failing": "Roosterbron %(name)s blijft mislukken",
    "Its last check-in was at %(since)s. Check that the gateway is on and that the "
    "lesfocus-agent service runs (lesfocus-agent status).":
        "Het laatste contact was om %(since)s. Controleer of de gateway aan staat en of de "
        "dienst lesfocus-agent draait (lesfocus-agent status).",
    "The gateway is in contact but has not applied the latest policy; see the agent's log "
    "(journalctl -u lesfocus-agent).":
        "De gateway heeft contact maar heeft het nieuwste beleid niet toegepast; zie het logboek "
        "van de agent (journalctl -u lesfocus-agent).",
    "Its policy has expired: until it gets a new one, nothing is blocked in its classrooms.":
        "Het beleid is verlopen: tot er een nieuw is, wordt in de lokalen niets geblokkeerd.",
    "The last error was: %(error)s": "De laatste fout was: %(error)s",
    "[lesfocus] Recovered: %(what)s": "[lesfocus] Hersteld: %(what)s",
    "Recovered: %(what)s": "Hersteld: %(what)s",
    "School: %(school)s": "School: %(school)s",
    "From %(start)s until %(end)s.": "Van %(start)s tot %(end)s.",
    "[lesfocus] %(what)s": "[lesfocus] %(what)s",
    "Since: %(start)s": "Sinds: %(start)s",
    "You get one more message when this is over. The IT page of the dashboard lists the open "
    "alerts.":
        "Je krijgt nog één bericht wanneer dit voorbij is. De IT-pagina van het dashboard toont "
        "de openstaande meldingen.",
    "Open alerts": "Openstaande meldingen",
    "since %(when)s": "sinds %(when)s",
    "e-mail not sent yet": "e-mail nog niet verstuurd",
}


def main() -> None:
    """Write nl/LC_MESSAGES/messages.po and .mo from messages.pot and the table above."""
    from pathlib import Path

    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po, write_po

    here = Path(__file__).parent
    with open(here / "messages.pot", "rb") as handle:
        catalog = read_po(handle, locale="nl")
    catalog.project, catalog.version = "lesfocus", "0.1"
    missing = []
    for message in catalog:
        if not message.id:
            continue
        key = message.id[0] if isinstance(message.id, tuple) else message.id
        if key not in NL:
            missing.append(key)
            continue
        text = NL[key]
        message.string = text if isinstance(message.id, tuple) else text
    if missing:
        raise SystemExit("no Dutch text for:\n  " + "\n  ".join(missing))
    out = here / "nl" / "LC_MESSAGES"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "messages.po", "wb") as handle:
        write_po(handle, catalog, omit_header=False, sort_output=True, width=100)
    with open(out / "messages.mo", "wb") as handle:
        write_mo(handle, catalog)


if __name__ == "__main__":
    main()
