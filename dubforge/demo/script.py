"""The demo's spoken lines: a founder presenting a small team app on a video call.

English is spoken by the bundled Piper voice; the other columns are hand-written translations of
similar length (so the dubbed lines fit the English windows). The first two lines are short so that
an 8-second demo still holds two whole lines. Line 6 is dense in bilabials (b, p, m) for lip-sync checks.
"""

from __future__ import annotations

LINES: tuple[dict[str, str], ...] = (
    {
        "en": "Hi everyone, thanks for joining the call.",
        "es": "Hola a todos, gracias por unirse a la llamada.",
        "de": "Hallo zusammen, danke, dass ihr dabei seid.",
        "fr": "Bonjour à tous, merci de rejoindre l'appel.",
    },
    {
        "en": "Today I want to show you our new app.",
        "es": "Hoy quiero enseñarles nuestra nueva aplicación.",
        "de": "Heute möchte ich euch unsere neue App zeigen.",
        "fr": "Aujourd'hui, je veux vous montrer notre nouvelle appli.",
    },
    {
        "en": "It helps small teams plan their week together.",
        "es": "Ayuda a los equipos pequeños a planear su semana.",
        "de": "Sie hilft kleinen Teams, ihre Woche zu planen.",
        "fr": "Elle aide les petites équipes à planifier leur semaine.",
    },
    {
        "en": "We started building it about two years ago.",
        "es": "Empezamos a desarrollarla hace unos dos años.",
        "de": "Wir haben vor etwa zwei Jahren damit angefangen.",
        "fr": "Nous avons commencé il y a environ deux ans.",
    },
    {
        "en": "Our first customers were local bakeries and cafes.",
        "es": "Nuestros primeros clientes fueron panaderías y cafeterías.",
        "de": "Unsere ersten Kunden waren Bäckereien und Cafés.",
        "fr": "Nos premiers clients étaient des boulangeries et des cafés.",
    },
    {
        "en": "Maybe Bob prefers fluffy purple muffins.",
        "es": "Quizá Bob prefiera magdalenas moradas y esponjosas.",
        "de": "Vielleicht mag Bob lieber flauschige lila Muffins.",
        "fr": "Bob préfère peut-être les muffins violets moelleux.",
    },
    {
        "en": "They told us what was missing every day.",
        "es": "Cada día nos contaban lo que faltaba.",
        "de": "Sie sagten uns jeden Tag, was noch fehlt.",
        "fr": "Ils nous disaient chaque jour ce qui manquait.",
    },
    {
        "en": "So we kept the design simple and calm.",
        "es": "Así que mantuvimos un diseño sencillo y tranquilo.",
        "de": "Also blieb das Design schlicht und ruhig.",
        "fr": "Alors nous avons gardé un design simple et calme.",
    },
    {
        "en": "You can share a plan with one tap.",
        "es": "Pueden compartir un plan con un solo toque.",
        "de": "Ihr könnt einen Plan mit einem Tippen teilen.",
        "fr": "Vous pouvez partager un plan d'un seul geste.",
    },
    {
        "en": "Everyone sees the changes right away.",
        "es": "Todos ven los cambios al instante.",
        "de": "Alle sehen die Änderungen sofort.",
        "fr": "Tout le monde voit les changements aussitôt.",
    },
    {
        "en": "Nothing gets lost between phone calls anymore.",
        "es": "Ya no se pierde nada entre llamadas.",
        "de": "Zwischen Telefonaten geht nichts mehr verloren.",
        "fr": "Plus rien ne se perd entre deux appels.",
    },
    {
        "en": "The feedback so far has been wonderful.",
        "es": "Los comentarios hasta ahora han sido maravillosos.",
        "de": "Das Feedback war bisher wunderbar.",
        "fr": "Les retours jusqu'ici sont formidables.",
    },
    {
        "en": "Next month we are opening it to everyone.",
        "es": "El mes que viene la abrimos a todo el mundo.",
        "de": "Nächsten Monat öffnen wir sie für alle.",
        "fr": "Le mois prochain, nous l'ouvrons à tout le monde.",
    },
    {
        "en": "Pricing will stay fair for small businesses.",
        "es": "Los precios seguirán siendo justos para los pequeños negocios.",
        "de": "Die Preise bleiben fair für kleine Betriebe.",
        "fr": "Les prix resteront justes pour les petites entreprises.",
    },
    {
        "en": "If you have questions, just send me a message.",
        "es": "Si tienen preguntas, envíenme un mensaje.",
        "de": "Wenn ihr Fragen habt, schreibt mir einfach.",
        "fr": "Si vous avez des questions, écrivez-moi simplement.",
    },
    {
        "en": "I really enjoy hearing how people use it.",
        "es": "Me encanta saber cómo la usa la gente.",
        "de": "Ich höre sehr gern, wie die Leute sie nutzen.",
        "fr": "J'adore découvrir comment les gens l'utilisent.",
    },
    {
        "en": "Our team is small, but we listen closely.",
        "es": "Nuestro equipo es pequeño, pero escuchamos con atención.",
        "de": "Unser Team ist klein, aber wir hören genau zu.",
        "fr": "Notre équipe est petite, mais nous écoutons attentivement.",
    },
    {
        "en": "Thanks again for your time today.",
        "es": "Gracias de nuevo por su tiempo hoy.",
        "de": "Nochmals danke für eure Zeit heute.",
        "fr": "Merci encore pour votre temps aujourd'hui.",
    },
    {
        "en": "See you soon, and take care.",
        "es": "Hasta pronto, y cuídense mucho.",
        "de": "Bis bald, und macht's gut.",
        "fr": "À bientôt, et prenez soin de vous.",
    },
)

# Languages with hand-written translations above (the rest of a demo goes through machine translation).
WRITTEN_LANGUAGES: tuple[str, ...] = ("es", "de", "fr")
