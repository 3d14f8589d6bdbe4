"""The chat's own words, in Arabic and English: one table, one entry per text.

Answers speak the question's language (rag.prompts); everything else the chat says — settings,
steps, upload and command replies, notices — speaks the browser's. Values are filled in as plain
text: callers escape the result (rag.markdown) before it reaches the page.
"""

from __future__ import annotations

LANGUAGES = ("ar", "en")

TEXTS: dict[str, dict[str, str]] = {
    # settings
    "settings.mode": {"ar": "طريقة الإجابة", "en": "Answer mode"},
    "settings.mode.extractive": {"ar": "اقتباس من المقالات (دون اتصال)", "en": "Extractive (offline)"},
    "settings.mode.llm": {"ar": "نموذج لغوي (litellm)", "en": "LLM (litellm)"},
    "settings.model": {"ar": "النموذج اللغوي (اسمه في litellm)", "en": "LLM model (litellm string)"},
    "settings.k": {"ar": "عدد المقاطع", "en": "Passages"},
    "settings.since": {"ar": "منشورة منذ (YYYY-MM-DD؛ تُستبعد المقالات غير المؤرخة)",
                       "en": "Published since (YYYY-MM-DD; undated articles are left out)"},
    "settings.until": {"ar": "منشورة حتى (YYYY-MM-DD؛ تُستبعد المقالات غير المؤرخة)",
                       "en": "Published until (YYYY-MM-DD; undated articles are left out)"},
    "settings.sources": {"ar": "المصادر: أسماء منافذ أو معرّفات مقالات، مفصولة بفواصل",
                         "en": "Sources: outlets or document ids, separated by commas"},
    # steps
    "index.step": {"ar": "تجهيز الفهرس", "en": "Preparing the index"},
    "index.loading": {"ar": "تحميل نموذج التضمين وفهرسة المقالات (في أول تشغيل فقط) …",
                      "en": "Loading the embedding model and indexing the articles (first start only) …"},
    "index.ready": {"ar": "المقالات الجاهزة: {count}", "en": "{count} articles ready"},
    "index.banner": {"ar": "تحميل الفهرس والنموذج … يُجاب عن الأسئلة بعد اكتماله",
                     "en": "Loading the index and the model … questions are answered once it is ready"},
    "index.failed": {"ar": "تعذّر تجهيز الفهرس: {error}", "en": "The index could not be prepared: {error}"},
    "upload.step": {"ar": "فهرسة الملفات المرفوعة", "en": "Indexing uploaded files"},
    "upload.done": {"ar": "تم", "en": "done"},
    "details.step": {"ar": "تفاصيل تقنية", "en": "Technical details"},
    # upload replies
    "upload.indexed": {
        "ar": "✓ تمت فهرسة {names}: المستندات المضافة أو المحدَّثة {documents}، والمقاطع {passages}. "
              "يمكنك السؤال عنها الآن.",
        "en": "✓ Indexed {names}: {documents} document(s) added or updated, {passages} passage(s). "
              "You can ask about them now."},
    "upload.renamed": {
        "ar": "✓ في الفهرس ملف آخر باسم {name}، لذا حُفظ هذا باسم {stored_as}: يمكن البحث في كليهما.",
        "en": "✓ Another file named {name} is already in the index, so this one is kept as {stored_as}: "
              "both can be searched."},
    "upload.already_there": {
        "ar": "= الملف {name} موجود في الفهرس بالمحتوى نفسه (باسم {stored_as}): لم يُضَف شيء.",
        "en": "= {name} is already in the index with the same content (as {stored_as}): nothing was added."},
    "upload.rejected": {"ar": "✗ رُفض {name}: {reason}", "en": "✗ Rejected {name}: {reason}"},
    # /docs and /remove
    "docs.header": {"ar": "عدد المقالات في الفهرس: {count}. احذف مقالة مرفوعة بالأمر /remove ID:",
                    "en": "{count} articles in the index. Remove an uploaded one with /remove ID:"},
    "docs.line": {"ar": "{doc_id} · {title} · المقاطع: {chunks}", "en": "{doc_id} · {title} · {chunks} passages"},
    "docs.uploaded": {"ar": " · مرفوعة", "en": " · uploaded"},
    "docs.more": {"ar": "… والمزيد ({count}): يسردها كلها الأمر `rag docs`.",
                  "en": "… and {count} more: `rag docs` lists them all."},
    "remove.usage": {"ar": "اكتب معرّف مقالة مرفوعة: /remove ID (يسردها الأمر /docs).",
                     "en": "Give the id of an uploaded article: /remove ID (/docs lists them)."},
    "remove.done": {"ar": "✓ حُذفت {doc_ids} (المقاطع: {chunks}) مع ملفها المرفوع: "
                          "لن تستند إليها الإجابات التالية.",
                    "en": "✓ Removed {doc_ids} ({chunks} passages) and its uploaded file: "
                          "the next answers no longer use it."},
    # answers
    "answer.no_model": {"ar": "لم يُحدَّد نموذج لغوي في الإعدادات: هذه إجابة مقتبسة من المقالات.",
                        "en": "No LLM model is set in the settings: extractive answer shown."},
    "answer.full_articles": {"ar": "المقالات كاملة:", "en": "Full articles:"},
}


def language(locale: str | None) -> str:
    """The chat's language for a browser locale ("ar-SA", "ar", "en-US", …): Arabic for any
    Arabic locale, English for everything else."""
    return "ar" if (locale or "").strip().lower().split("-")[0] == "ar" else "en"


def text(key: str, lang: str, **values: object) -> str:
    """The text `key` in `lang` ("ar" or "en"), its {placeholders} filled with `values`."""
    try:
        entry = TEXTS[key]
    except KeyError:
        raise KeyError(f"no chat text {key!r}: add it to rag.ui_text.TEXTS in Arabic and English") from None
    if lang not in entry:
        raise ValueError(f"chat language {lang!r} is not one of {', '.join(LANGUAGES)}: "
                         "use rag.ui_text.language(locale) to choose it")
    return entry[lang].format(**values)
