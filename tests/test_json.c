/*
 * test_json.c - the one JSON writer: exact text for numbers (non-finite
 * as null), escaped strings and keys, nesting and commas, and misuse
 * (a key in an array, an unclosed container) giving no text at all.
 * The expected strings are written by hand from RFC 8259.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

static void test_numbers(void **state)
{
    (void)state;
    struct json j;
    json_init(&j);
    json_obj_begin(&j, NULL);
    json_num(&j, "a", 2.5, 17);
    json_num(&j, "nan", NAN, 17);
    json_num(&j, "inf", INFINITY, 6);
    json_num(&j, "ninf", -INFINITY, 6);
    json_num(&j, "tiny", 1e-300, 3);
    json_num(&j, "third", 1.0 / 3.0, 17);
    json_int(&j, "i", -9007199254740993LL);
    json_null(&j, "z");
    json_obj_end(&j);
    assert_string_equal(json_text(&j),
                        "{\"a\":2.5,\"nan\":null,\"inf\":null,\"ninf\":null,"
                        "\"tiny\":1e-300,\"third\":0.33333333333333331,"
                        "\"i\":-9007199254740993,\"z\":null}");
    /* %.17g round-trips the double exactly */
    double back = strtod(strstr(json_text(&j), "0.333"), NULL);
    assert_true(back == 1.0 / 3.0);
    json_free(&j);
}

static void test_strings(void **state)
{
    (void)state;
    struct json j;
    json_init(&j);
    json_obj_begin(&j, NULL);
    json_str(&j, "say \"hi\"", "a\\b\n\t\x01\x1f\"é");
    json_str(&j, "empty", "");
    json_obj_end(&j);
    assert_string_equal(json_text(&j),
                        "{\"say \\\"hi\\\"\":\"a\\\\b\\n\\t\\u0001\\u001f"
                        "\\\"é\",\"empty\":\"\"}");
    json_free(&j);
}

static void test_nesting(void **state)
{
    (void)state;
    struct json j;
    json_init(&j);
    json_obj_begin(&j, NULL);
    json_arr_begin(&j, "e");
    json_arr_end(&j);
    json_arr_begin(&j, "xs");
    for (int i = 0; i < 3; i++)
        json_num(&j, NULL, i, 6);
    json_obj_begin(&j, NULL);
    json_int(&j, "k", 1);
    json_obj_end(&j);
    json_arr_end(&j);
    json_obj_begin(&j, "o");
    json_obj_end(&j);
    json_obj_end(&j);
    assert_string_equal(json_text(&j),
                        "{\"e\":[],\"xs\":[0,1,2,{\"k\":1}],\"o\":{}}");
    /* reset: the next value starts fresh, the buffer is kept */
    json_reset(&j);
    json_arr_begin(&j, NULL);
    json_arr_end(&j);
    assert_string_equal(json_text(&j), "[]");
    json_free(&j);
}

static void test_misuse(void **state)
{
    (void)state;
    struct json j;
    json_init(&j);
    assert_null(json_text(&j)); /* nothing written */
    json_obj_begin(&j, NULL);
    assert_null(json_text(&j)); /* still open */
    json_num(&j, NULL, 1, 6);   /* a value without a key in an object */
    json_obj_end(&j);
    assert_null(json_text(&j));
    assert_int_equal(json_write_line(&j, stdout), -1);

    json_reset(&j);
    json_arr_begin(&j, NULL);
    json_int(&j, "k", 1);       /* a key inside an array */
    json_arr_end(&j);
    assert_null(json_text(&j));

    json_reset(&j);
    for (int i = 0; i <= JSON_MAX_DEPTH; i++)
        json_arr_begin(&j, NULL);
    for (int i = 0; i <= JSON_MAX_DEPTH; i++)
        json_arr_end(&j);
    assert_null(json_text(&j));

    json_reset(&j);
    json_obj_begin(&j, NULL);
    json_arr_end(&j);           /* wrong closer */
    assert_null(json_text(&j));

    json_reset(&j);
    json_int(&j, NULL, 1);
    json_int(&j, NULL, 2);      /* two top-level values */
    assert_null(json_text(&j));
    json_free(&j);
}

static void test_write_line(void **state)
{
    (void)state;
    struct json j;
    char buf[64] = "";
    json_init(&j);
    json_obj_begin(&j, NULL);
    json_num(&j, "loss", NAN, 17);
    json_obj_end(&j);
    FILE *f = tmpfile();
    assert_non_null(f);
    assert_int_equal(json_write_line(&j, f), 0);
    rewind(f);
    assert_non_null(fgets(buf, sizeof buf, f));
    assert_string_equal(buf, "{\"loss\":null}\n");
    fclose(f);
    json_free(&j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_nesting),
        cmocka_unit_test(test_misuse),
        cmocka_unit_test(test_write_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
