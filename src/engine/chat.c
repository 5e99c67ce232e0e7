/*
 * chat.c - the common instruct formats, chosen from the markers in a
 * model's tokenizer.chat_template (a Jinja template we do not execute).
 */
#include <string.h>

#include "tqai_engine.h"

tq_chat_template tq_chat_template_detect(const tq_gguf *g) {
  if (!g) return TQ_CHAT_NONE;
  int64_t i = tq_gguf_find_key(g, "tokenizer.chat_template");
  tq_str t;
  if (i < 0 || tq_gguf_get_string(g, (uint64_t)i, &t) != TQ_OK) return TQ_CHAT_NONE;
  /* The markers are plain ASCII; search the bytes without assuming a NUL. */
  static const struct {
    const char *marker;
    tq_chat_template tmpl;
  } marks[] = {{"<|im_start|>", TQ_CHAT_CHATML},
               {"<|start_header_id|>", TQ_CHAT_LLAMA3},
               {"[INST]", TQ_CHAT_MISTRAL}};
  for (size_t m = 0; m < sizeof marks / sizeof marks[0]; m++) {
    size_t ml = strlen(marks[m].marker);
    for (uint64_t p = 0; p + ml <= t.len; p++)
      if (memcmp(t.data + p, marks[m].marker, ml) == 0) return marks[m].tmpl;
  }
  return TQ_CHAT_NONE;
}

const char *tq_chat_template_name(tq_chat_template t) {
  switch (t) {
    case TQ_CHAT_NONE: return "none";
    case TQ_CHAT_CHATML: return "chatml";
    case TQ_CHAT_LLAMA3: return "llama3";
    case TQ_CHAT_MISTRAL: return "mistral";
  }
  return "unknown";
}

/* Appends text to out while tracking the length needed. */
typedef struct buf {
  char *out;
  size_t cap, len;
} buf;

static void put(buf *b, const char *s) {
  size_t n = strlen(s);
  if (b->len + n < b->cap) memcpy(b->out + b->len, s, n);
  b->len += n;
}

tq_status tq_chat_format(tq_chat_template t, const tq_chat_message *msgs, size_t n_msgs,
                         int add_assistant, char *out, size_t cap, size_t *n_out) {
  if ((!msgs && n_msgs) || (!out && cap) || !n_out) return TQ_ERR_INVALID_ARGUMENT;
  for (size_t i = 0; i < n_msgs; i++)
    if (!msgs[i].role || !msgs[i].content) return TQ_ERR_INVALID_ARGUMENT;
  buf b = {out, cap, 0};
  switch (t) {
    case TQ_CHAT_NONE:
      for (size_t i = 0; i < n_msgs; i++) put(&b, msgs[i].content);
      break;
    case TQ_CHAT_CHATML:
      for (size_t i = 0; i < n_msgs; i++) {
        put(&b, "<|im_start|>");
        put(&b, msgs[i].role);
        put(&b, "\n");
        put(&b, msgs[i].content);
        put(&b, "<|im_end|>\n");
      }
      if (add_assistant) put(&b, "<|im_start|>assistant\n");
      break;
    case TQ_CHAT_LLAMA3:
      put(&b, "<|begin_of_text|>");
      for (size_t i = 0; i < n_msgs; i++) {
        put(&b, "<|start_header_id|>");
        put(&b, msgs[i].role);
        put(&b, "<|end_header_id|>\n\n");
        put(&b, msgs[i].content);
        put(&b, "<|eot_id|>");
      }
      if (add_assistant) put(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
      break;
    case TQ_CHAT_MISTRAL: {
      /* A system message is folded into the first user turn. */
      const char *system = NULL;
      put(&b, "<s>");
      for (size_t i = 0; i < n_msgs; i++) {
        if (!strcmp(msgs[i].role, "system")) {
          system = msgs[i].content;
        } else if (!strcmp(msgs[i].role, "user")) {
          put(&b, "[INST] ");
          if (system) {
            put(&b, system);
            put(&b, "\n\n");
            system = NULL;
          }
          put(&b, msgs[i].content);
          put(&b, " [/INST]");
        } else {
          put(&b, " ");
          put(&b, msgs[i].content);
          put(&b, "</s>");
        }
      }
      (void)add_assistant; /* the assistant turn follows [/INST] directly */
      break;
    }
    default:
      return TQ_ERR_INVALID_ARGUMENT;
  }
  *n_out = b.len;
  if (cap) out[b.len < cap ? b.len : cap - 1] = '\0';
  return b.len < cap ? TQ_OK : TQ_ERR_BUFFER_TOO_SMALL;
}
