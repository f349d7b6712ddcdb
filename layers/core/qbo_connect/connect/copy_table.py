"""What a person reads on each hosted page, in one table: outcome -> status, title, text, retry.

Two languages, those of QuickBooks' own markets here: English (``en``) and Canadian French
(``fr-CA``), chosen from the browser's ``Accept-Language`` (:func:`choose_language`). Texts are
plain strings with named placeholders, filled by :func:`render_text` with values the page has
escaped nothing of yet (``pages`` escapes everything):

``{app}`` / ``{App}``
    ``AppName``, or "the app you came from" (capitalised for ``{App}``) when none is set.
``{company}``
    The company's name in quotes, or its ID.

``retry`` says whether the page offers "Try again" when the flow has a way to (a live link);
pages with a status of 400 or more also show the support link and a reference id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from qbo_connect.connect.outcomes import Outcome

EN = "en"
FR_CA = "fr-CA"
LANGUAGES = (EN, FR_CA)


@dataclass(frozen=True)
class Text:
    title: str
    paragraphs: tuple[str, ...]


@dataclass(frozen=True)
class Row:
    status: int
    retry: bool
    en: Text
    fr: Text

    def text(self, language: str) -> Text:
        return self.fr if language == FR_CA else self.en


def _row(status: int, retry: bool, en: tuple[str, ...], fr: tuple[str, ...]) -> Row:
    return Row(status, retry, Text(en[0], en[1:]), Text(fr[0], fr[1:]))


_NOTHING_SAVED_FR = "Rien n’a été enregistré."
_TRY_LATER_EN = "Please try again in a few minutes."
_TRY_LATER_FR = "Veuillez réessayer dans quelques minutes."
_UNVERIFIED_EN = "The QuickBooks sign-in could not be verified"
_UNVERIFIED_FR = "La connexion à QuickBooks n’a pas pu être vérifiée"
_COOKIE_EN = (
    "This sign-in attempt cannot be verified",
    "It was started in another browser or tab, or the browser did not send back the cookie "
    "that ties it to you. Nothing was saved.",
    "Start again in this browser from {app}.",
)
_COOKIE_FR = (
    "Cette tentative de connexion ne peut pas être vérifiée",
    "Elle a été commencée dans un autre navigateur ou onglet, ou le navigateur n’a pas renvoyé "
    "le témoin qui la relie à vous. " + _NOTHING_SAVED_FR,
    "Recommencez dans ce navigateur à partir de {app}.",
)
_LANDING_EN = (
    "{App} wants to connect to your QuickBooks company",
    "You will be sent to Intuit to sign in and choose the company. Nothing is shared until "
    "you approve it there.",
)
_LANDING_FR = (
    "{App} veut se connecter à votre entreprise QuickBooks",
    "Vous serez dirigé vers Intuit pour vous connecter et choisir l’entreprise. Rien n’est "
    "partagé avant que vous l’approuviez là-bas.",
)
_NEXT_EN = (
    "What happens next: {app} can now work with the QuickBooks data you approved, and the "
    "connection stays active on its own. You can close this page and go back to {app}.",
    "You can disconnect at any time, from {app} or from QuickBooks.",
)
_NEXT_FR = (
    "Et maintenant : {app} peut utiliser les données QuickBooks que vous avez approuvées, et "
    "la connexion reste active d’elle-même. Vous pouvez fermer cette page et retourner à {app}.",
    "Vous pouvez vous déconnecter en tout temps, à partir de {app} ou de QuickBooks.",
)

COPY: Mapping[Outcome, Row] = {
    Outcome.LANDING: _row(200, False, _LANDING_EN, _LANDING_FR),
    Outcome.LANDING_RECONNECT: _row(
        200,
        False,
        ("{App} wants to reconnect to your QuickBooks company", *_LANDING_EN[1:]),
        ("{App} veut se reconnecter à votre entreprise QuickBooks", *_LANDING_FR[1:]),
    ),
    Outcome.CROSS_SITE_REFUSED: _row(
        403,
        False,
        (
            _LANDING_EN[0],
            "For your safety, connecting must be started from this page. Check the name and "
            "the access below; if they are not what you expected, close this page.",
            *_LANDING_EN[1:],
        ),
        (
            _LANDING_FR[0],
            "Pour votre sécurité, la connexion doit commencer à partir de cette page. Vérifiez "
            "le nom et l’accès ci-dessous; s’ils ne sont pas ce que vous attendiez, fermez "
            "cette page.",
            *_LANDING_FR[1:],
        ),
    ),
    Outcome.RECONNECT_INFO: _row(
        200,
        False,
        (
            "Reconnect QuickBooks from {app}",
            "To reconnect your QuickBooks company, open {app} and choose to reconnect "
            "QuickBooks there.",
            "{App} brings you back here with a fresh, personal link.",
        ),
        (
            "Reconnectez QuickBooks à partir de {app}",
            "Pour reconnecter votre entreprise QuickBooks, ouvrez {app} et choisissez d’y "
            "reconnecter QuickBooks.",
            "{App} vous ramènera ici avec un nouveau lien personnel.",
        ),
    ),
    Outcome.LINK_REQUIRED: _row(
        400,
        False,
        (
            "A connect link is needed",
            "This page works only with the personal link {app} gives you.",
            "Open {app} and start connecting QuickBooks again there.",
        ),
        (
            "Un lien de connexion est nécessaire",
            "Cette page fonctionne seulement avec le lien personnel que {app} vous donne.",
            "Ouvrez {app} et recommencez la connexion à QuickBooks à partir de là.",
        ),
    ),
    Outcome.LINK_UNKNOWN: _row(
        404,
        False,
        (
            "This connect link is not valid",
            "Check that the whole link was copied, or ask {app} for a new one.",
        ),
        (
            "Ce lien de connexion n’est pas valide",
            "Vérifiez que le lien a été copié en entier, ou demandez-en un nouveau à {app}.",
        ),
    ),
    Outcome.LINK_USED: _row(
        410,
        False,
        (
            "This connect link was already used",
            "A QuickBooks company was already connected with it, maybe in another tab. Each "
            "link works once: ask {app} for a new one if you want to connect again.",
        ),
        (
            "Ce lien de connexion a déjà été utilisé",
            "Une entreprise QuickBooks a déjà été connectée avec ce lien, peut-être dans un "
            "autre onglet. Chaque lien ne fonctionne qu’une fois : demandez-en un nouveau à "
            "{app} pour vous connecter de nouveau.",
        ),
    ),
    Outcome.LINK_EXPIRED: _row(
        410,
        False,
        (
            "This connect link has expired",
            "Connect links are valid for a short time. Ask {app} for a new one.",
        ),
        (
            "Ce lien de connexion a expiré",
            "Les liens de connexion sont valides peu de temps. Demandez-en un nouveau à {app}.",
        ),
    ),
    Outcome.BAD_REQUEST: _row(
        400,
        False,
        (
            "This request is not valid",
            "The address is incomplete or was changed.",
            "Start again from {app}.",
        ),
        (
            "Cette demande n’est pas valide",
            "L’adresse est incomplète ou a été modifiée.",
            "Recommencez à partir de {app}.",
        ),
    ),
    Outcome.STATE_UNKNOWN: _row(
        400,
        False,
        ("This sign-in attempt is not recognised", "Start again from {app}."),
        ("Cette tentative de connexion n’est pas reconnue", "Recommencez à partir de {app}."),
    ),
    Outcome.STATE_USED: _row(
        410,
        False,
        (
            "This sign-in attempt was already used",
            "Each sign-in with Intuit can be completed once. Start again from {app} if you "
            "want to connect again.",
        ),
        (
            "Cette tentative de connexion a déjà été utilisée",
            "Chaque connexion avec Intuit ne peut être terminée qu’une fois. Recommencez à "
            "partir de {app} pour vous connecter de nouveau.",
        ),
    ),
    Outcome.STATE_EXPIRED: _row(
        410,
        False,
        (
            "This sign-in attempt has expired",
            "It took too long between leaving for Intuit and coming back. Nothing was saved.",
            "Start again from {app}.",
        ),
        (
            "Cette tentative de connexion a expiré",
            "Trop de temps s’est écoulé entre le départ vers Intuit et le retour. "
            + _NOTHING_SAVED_FR,
            "Recommencez à partir de {app}.",
        ),
    ),
    Outcome.COOKIE_MISSING: _row(403, False, _COOKIE_EN, _COOKIE_FR),
    Outcome.COOKIE_MISMATCH: _row(403, False, _COOKIE_EN, _COOKIE_FR),
    Outcome.DENIED: _row(
        200,
        True,
        (
            "Connection cancelled",
            "You chose not to connect your QuickBooks company. Nothing was saved.",
            "To connect later, start again from {app}.",
        ),
        (
            "Connexion annulée",
            "Vous avez choisi de ne pas connecter votre entreprise QuickBooks. "
            + _NOTHING_SAVED_FR,
            "Pour vous connecter plus tard, recommencez à partir de {app}.",
        ),
    ),
    Outcome.INVALID_SCOPE: _row(
        400,
        True,
        (
            "QuickBooks refused the requested permissions",
            "Intuit does not allow {app} the access it asked for. Nothing was saved.",
        ),
        (
            "QuickBooks a refusé les autorisations demandées",
            "Intuit n’accorde pas à {app} l’accès demandé. " + _NOTHING_SAVED_FR,
        ),
    ),
    Outcome.INTUIT_ERROR: _row(
        502,
        True,
        (
            "QuickBooks could not complete the connection",
            "Intuit reported a problem. Nothing was saved.",
        ),
        (
            "QuickBooks n’a pas pu terminer la connexion",
            "Intuit a signalé un problème. " + _NOTHING_SAVED_FR,
        ),
    ),
    Outcome.REALM_MISSING: _row(
        400,
        True,
        (
            "QuickBooks did not say which company to connect",
            "The answer from Intuit lacks the company ID. Nothing was saved.",
        ),
        (
            "QuickBooks n’a pas indiqué quelle entreprise connecter",
            "La réponse d’Intuit ne contient pas l’identifiant de l’entreprise. "
            + _NOTHING_SAVED_FR,
        ),
    ),
    Outcome.EXCHANGE_UNAVAILABLE: _row(
        503,
        True,
        (
            "QuickBooks is not responding",
            "Intuit did not answer in time, so the connection could not be completed. "
            "Nothing was saved.",
            _TRY_LATER_EN,
        ),
        (
            "QuickBooks ne répond pas",
            "Intuit n’a pas répondu à temps; la connexion n’a donc pas pu être terminée. "
            + _NOTHING_SAVED_FR,
            _TRY_LATER_FR,
        ),
    ),
    Outcome.EXCHANGE_REFUSED: _row(
        502,
        True,
        (
            "QuickBooks did not accept the sign-in",
            "The sign-in had expired, was already used, or Intuit refused it. Nothing was saved.",
        ),
        (
            "QuickBooks n’a pas accepté la connexion",
            "La connexion avait expiré, avait déjà été utilisée, ou Intuit l’a refusée. "
            + _NOTHING_SAVED_FR,
        ),
    ),
    Outcome.ID_TOKEN_MISSING: _row(
        502,
        True,
        (_UNVERIFIED_EN, "Intuit sent no identity token. Nothing was saved."),
        (_UNVERIFIED_FR, "Intuit n’a envoyé aucun jeton d’identité. " + _NOTHING_SAVED_FR),
    ),
    Outcome.ID_TOKEN_INVALID: _row(
        502,
        True,
        (_UNVERIFIED_EN, "Intuit’s identity token is not valid. Nothing was saved."),
        (_UNVERIFIED_FR, "Le jeton d’identité d’Intuit n’est pas valide. " + _NOTHING_SAVED_FR),
    ),
    Outcome.ID_TOKEN_UNVERIFIED: _row(
        503,
        True,
        (
            _UNVERIFIED_EN,
            "Intuit’s signing keys could not be fetched. Nothing was saved.",
            _TRY_LATER_EN,
        ),
        (
            _UNVERIFIED_FR,
            "Les clés de signature d’Intuit n’ont pas pu être obtenues. " + _NOTHING_SAVED_FR,
            _TRY_LATER_FR,
        ),
    ),
    Outcome.REALM_MISMATCH: _row(
        502,
        True,
        (
            _UNVERIFIED_EN,
            "The company in Intuit’s answer does not match the identity token. Nothing was saved.",
        ),
        (
            _UNVERIFIED_FR,
            "L’entreprise de la réponse d’Intuit ne correspond pas au jeton d’identité. "
            + _NOTHING_SAVED_FR,
        ),
    ),
    Outcome.REALM_INVALID: _row(
        502,
        True,
        (_UNVERIFIED_EN, "Intuit’s identity token names no valid company. Nothing was saved."),
        (
            _UNVERIFIED_FR,
            "Le jeton d’identité d’Intuit ne nomme aucune entreprise valide. " + _NOTHING_SAVED_FR,
        ),
    ),
    Outcome.REALM_NOT_PROVEN: _row(
        403,
        False,
        (
            _UNVERIFIED_EN,
            "Intuit’s answer does not match the company it names, so the connection was "
            "refused and the sign-in was cancelled at Intuit. Nothing was saved.",
            "Start again from {app}.",
        ),
        (
            _UNVERIFIED_FR,
            "La réponse d’Intuit ne correspond pas à l’entreprise qu’elle nomme; la connexion "
            "a donc été refusée et annulée chez Intuit. " + _NOTHING_SAVED_FR,
            "Recommencez à partir de {app}.",
        ),
    ),
    Outcome.REALM_CHECK_UNAVAILABLE: _row(
        503,
        True,
        (
            "QuickBooks is not responding",
            "The company could not be checked with Intuit, so the connection was not "
            "completed. Nothing was saved.",
            _TRY_LATER_EN,
        ),
        (
            "QuickBooks ne répond pas",
            "L’entreprise n’a pas pu être vérifiée auprès d’Intuit; la connexion n’a donc pas "
            "été terminée. " + _NOTHING_SAVED_FR,
            _TRY_LATER_FR,
        ),
    ),
    Outcome.OTHER_TENANT: _row(
        403,
        False,
        (
            "This QuickBooks company is connected to another account",
            "A QuickBooks company can be connected to one account of {app} at a time. "
            "Nothing was saved.",
            "Ask whoever connected it to disconnect it first, then try again.",
        ),
        (
            "Cette entreprise QuickBooks est connectée à un autre compte",
            "Une entreprise QuickBooks ne peut être connectée qu’à un seul compte de {app} à "
            "la fois. " + _NOTHING_SAVED_FR,
            "Demandez à la personne qui l’a connectée de la déconnecter d’abord, puis réessayez.",
        ),
    ),
    Outcome.STORE_CONFLICT: _row(
        503,
        True,
        (
            "The connection could not be saved",
            "The QuickBooks company was being changed at the same time. Nothing was saved.",
            "Please try again.",
        ),
        (
            "La connexion n’a pas pu être enregistrée",
            "L’entreprise QuickBooks était modifiée au même moment. " + _NOTHING_SAVED_FR,
            "Veuillez réessayer.",
        ),
    ),
    Outcome.CREATED: _row(
        200,
        False,
        (
            "QuickBooks connected",
            "Your QuickBooks company {company} is connected to {app}.",
            *_NEXT_EN,
        ),
        (
            "QuickBooks est connecté",
            "Votre entreprise QuickBooks {company} est maintenant connectée à {app}.",
            *_NEXT_FR,
        ),
    ),
    Outcome.RECONNECTED: _row(
        200,
        False,
        (
            "QuickBooks reconnected",
            "Your QuickBooks company {company} is reconnected to {app}.",
            *_NEXT_EN,
        ),
        (
            "QuickBooks est reconnecté",
            "Votre entreprise QuickBooks {company} est de nouveau connectée à {app}.",
            *_NEXT_FR,
        ),
    ),
    Outcome.DISCONNECTED: _row(
        200,
        False,
        (
            "QuickBooks disconnected",
            "If you just disconnected {app} in QuickBooks, it can no longer reach your "
            "company’s data. There is nothing else to do.",
            "To connect again later, start from {app}.",
        ),
        (
            "QuickBooks est déconnecté",
            "Si vous venez de déconnecter {app} dans QuickBooks, cette application n’a plus "
            "accès aux données de votre entreprise. Vous n’avez rien d’autre à faire.",
            "Pour vous connecter de nouveau plus tard, commencez à partir de {app}.",
        ),
    ),
    Outcome.CONFIGURATION_ERROR: _row(
        500,
        False,
        (
            "This service is not set up correctly",
            "Its administrator needs to finish the setup. Nothing was saved.",
        ),
        (
            "Ce service n’est pas configuré correctement",
            "Son administrateur doit terminer la configuration. " + _NOTHING_SAVED_FR,
        ),
    ),
    Outcome.INTERNAL_ERROR: _row(
        500,
        False,
        (
            "Something went wrong",
            "The connection could not be completed. Please try again in a moment.",
        ),
        (
            "Une erreur s’est produite",
            "La connexion n’a pas pu être terminée. Veuillez réessayer dans un instant.",
        ),
    ),
    Outcome.NOT_FOUND: _row(
        404,
        False,
        ("Page not found", "There is nothing at this address."),
        ("Page introuvable", "Il n’y a rien à cette adresse."),
    ),
}

#: The words around the texts: buttons, links, labels.
UI: Mapping[str, Mapping[str, str]] = {
    EN: {
        "app": "the app you came from",
        "App": "The app you came from",
        "connect": "Connect to QuickBooks",
        "reconnect": "Reconnect to QuickBooks",
        "try_again": "Try again",
        "return_to": "Return to {app}",
        "support": "Get help",
        "privacy": "Privacy",
        "reference": "Reference: {reference}. Quote it if you contact support.",
        "sandbox": "Sandbox: test companies only",
        "account": "Your account at {app}: {account}",
        "next_done": "You can close this tab now and go back to {app}.",
        "next_problem": "Close this tab, go back to {app} and start again from there.",
        "access": "It asks for access to:",
        "company_id": "(ID {realm_id})",
        "quote": "“{name}”",
        "logo": "{app} logo",
        "disconnect_note": "You can disconnect at any time, from {app} or from QuickBooks.",
    },
    FR_CA: {
        "app": "l’application d’où vous venez",
        "App": "L’application d’où vous venez",
        "connect": "Se connecter à QuickBooks",
        "reconnect": "Se reconnecter à QuickBooks",
        "try_again": "Réessayer",
        "return_to": "Retourner à {app}",
        "support": "Obtenir de l’aide",
        "privacy": "Confidentialité",
        "reference": "Référence : {reference}. Indiquez-la si vous communiquez avec le soutien.",
        "sandbox": "Bac à sable : entreprises de test seulement",
        "account": "Votre compte chez {app} : {account}",
        "next_done": "Vous pouvez fermer cet onglet et retourner à {app}.",
        "next_problem": "Fermez cet onglet, retournez à {app} et recommencez à partir de là.",
        "access": "Elle demande l’accès à :",
        "company_id": "(identifiant {realm_id})",
        "quote": "« {name} »",
        "logo": "Logo de {app}",
        "disconnect_note": "Vous pouvez vous déconnecter en tout temps, à partir de {app} ou "
        "de QuickBooks.",
    },
}

#: The requested access in plain words, one line per scope.
SCOPE_WORDS: Mapping[str, Mapping[str, str]] = {
    EN: {
        "com.intuit.quickbooks.accounting": "your accounting data: customers, invoices, "
        "bills, accounts and reports",
        "com.intuit.quickbooks.payment": "payments: card and bank payments taken through "
        "QuickBooks",
        "openid": "your Intuit identity, to confirm who approved the connection",
        "profile": "your name",
        "email": "your email address",
        "phone": "your phone number",
        "address": "your postal address",
    },
    FR_CA: {
        "com.intuit.quickbooks.accounting": "vos données comptables : clients, factures, "
        "fournisseurs, comptes et rapports",
        "com.intuit.quickbooks.payment": "les paiements : paiements par carte et bancaires "
        "reçus par QuickBooks",
        "openid": "votre identité Intuit, pour confirmer qui a approuvé la connexion",
        "profile": "votre nom",
        "email": "votre adresse courriel",
        "phone": "votre numéro de téléphone",
        "address": "votre adresse postale",
    },
}

_LANGUAGE_RANGE = re.compile(
    r"^\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([0-9.]{1,5}))?\s*$"
)


def choose_language(accept_language: str | None) -> str:
    """``fr-CA`` when the browser prefers any French to English, else ``en`` (RFC 9110 q-values).

    Every French range maps to Canadian French (the only French here); a header that cannot
    be read, or names neither language, gets English.
    """
    best: tuple[float, int, str] | None = None
    for position, part in enumerate((accept_language or "")[:512].split(",")[:32]):
        match = _LANGUAGE_RANGE.match(part)
        if not match:
            continue
        tag = match.group(1).lower()
        try:
            quality = float(match.group(2)) if match.group(2) else 1.0
        except ValueError:
            continue
        primary = tag.split("-", 1)[0]
        language = FR_CA if primary == "fr" else EN if primary == "en" else None
        if language is None or quality <= 0:
            continue
        # Highest quality wins; among equals, the one listed first.
        if best is None or quality > best[0]:
            best = (quality, position, language)
    return best[2] if best else EN


def render_text(template: str, values: Mapping[str, str]) -> str:
    """Fill the named placeholders; an unknown placeholder is a bug caught by the tests."""
    return template.format_map(dict(values))
