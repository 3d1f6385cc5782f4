/* base/json_name.h - what a JSON value is, in words, for error messages
 * ("expected an integer, got a string"): shared by every reader of JSON
 * (safetensors headers, config.json, tokenizer.json, PEFT adapters, training
 * records). Its own library (tsr_json_name), so a reader that needs nothing
 * else of the runtime links only it and jansson. */
#ifndef TSR_BASE_JSON_NAME_H
#define TSR_BASE_JSON_NAME_H

#include <jansson.h>

/* "an object", "an array", "a string", "an integer", "a real number",
 * "a boolean" or "null"; static strings. */
const char *tsr_json_type_name(const json_t *v);

#endif
