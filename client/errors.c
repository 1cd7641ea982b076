/* Names of error codes and reject fields; shared by libtandem and tandemd.
 * Both tables expand from the lists that also make the enums
 * (TDM_ERRNO_MAP in tandem.h, TDM_REJECT_FIELD_MAP in tandem/wire.h). */
#include "tandem.h"

#define TDM_API __attribute__((visibility("default")))

/* Counts the entries of a list: each X(...) adds one. */
#define TDM_COUNT_ONE(name, value, text) +1

static const char *const error_names[] = { [TDM_OK] = "success",
#define TDM_ERRNO_NAME(name, value, message) [TDM_##name] = message,
	                                   TDM_ERRNO_MAP(TDM_ERRNO_NAME)
#undef TDM_ERRNO_NAME
};

/* Values 1, 2, ... without a gap or a repeat: as many entries as codes, and
 * the table (sized by its highest index) exactly as long as the enum. A
 * repeated value would also trip -Woverride-init. */
_Static_assert(0 TDM_ERRNO_MAP(TDM_COUNT_ONE) == TDM_E__COUNT - 1,
               "TDM_ERRNO_MAP: values must run 1, 2, ... without a gap");
_Static_assert(sizeof(error_names) / sizeof(error_names[0]) == TDM_E__COUNT,
               "every error code has a message");

TDM_API const char *tdm_version(void)
{
	return TDM_VERSION_STRING;
}

static const char *const error_symbols[] = { [TDM_OK] = "OK",
#define TDM_ERRNO_SYMBOL(name, value, message) [TDM_##name] = #name,
	                                     TDM_ERRNO_MAP(TDM_ERRNO_SYMBOL)
#undef TDM_ERRNO_SYMBOL
};

TDM_API const char *tdm_strerror(int err)
{
	if (err < 0)
		err = -err;
	if (err >= TDM_E__COUNT || !error_names[err])
		return "unknown error";
	return error_names[err];
}

TDM_API const char *tdm_error_symbol(int err)
{
	if (err < 0)
		err = -err;
	return err < TDM_E__COUNT ? error_symbols[err] : NULL;
}

static const char *const field_names[] = {
#define TDM_REJECT_FIELD_NAME(name, value, what) [TDM_REJECT_##name] = what,
	TDM_REJECT_FIELD_MAP(TDM_REJECT_FIELD_NAME)
#undef TDM_REJECT_FIELD_NAME
};

_Static_assert(0 TDM_REJECT_FIELD_MAP(TDM_COUNT_ONE) == TDM_REJECT__COUNT,
               "TDM_REJECT_FIELD_MAP: values must run 0, 1, ... without a gap");
_Static_assert(sizeof(field_names) / sizeof(field_names[0]) == TDM_REJECT__COUNT,
               "every reject field has a name");

static const char *const field_symbols[] = {
#define TDM_REJECT_FIELD_SYMBOL(name, value, what) [TDM_REJECT_##name] = #name,
	TDM_REJECT_FIELD_MAP(TDM_REJECT_FIELD_SYMBOL)
#undef TDM_REJECT_FIELD_SYMBOL
};

TDM_API const char *tdm_reject_field_name(unsigned field)
{
	return field < TDM_REJECT__COUNT ? field_names[field] : "unknown field";
}

TDM_API const char *tdm_reject_field_symbol(unsigned field)
{
	return field < TDM_REJECT__COUNT ? field_symbols[field] : NULL;
}
