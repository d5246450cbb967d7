/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Shared by the pieces of the domain XML parser: domain-xml.c (reading the document safely,
 * helpers), domain-xml-domain.c (top-level elements) and domain-xml-devices.c (<devices>). */

#include <inttypes.h>
#include <stdbool.h>
#include <string.h>
#include <libxml/tree.h>

#include "domain-def.h"

typedef struct DomainXmlParser {
        char *error;            /* "line N: <element>: what", the first error only */
} DomainXmlParser;

int domain_xml_fail(DomainXmlParser *p, xmlNode *node, const char *format, ...) _printf_(3, 4);
int domain_xml_check_attrs(DomainXmlParser *p, xmlNode *node, const char *const *allowed);
int domain_xml_check_children(DomainXmlParser *p, xmlNode *node);
char *domain_xml_attr(xmlNode *node, const char *name);
int domain_xml_text(DomainXmlParser *p, xmlNode *node, size_t max, char **ret);
int domain_xml_text_stripped(DomainXmlParser *p, xmlNode *node, char **ret);
int domain_xml_enum(DomainXmlParser *p, xmlNode *node, const char *what, const char *value,
                    int (*from_string)(const char *), const char *const *choices);
int domain_xml_uint(DomainXmlParser *p, xmlNode *node, const char *what, const char *value,
                    uint64_t min, uint64_t max, uint64_t *ret);
int domain_xml_once(DomainXmlParser *p, xmlNode *node, xmlNode **seen);

#define ATTRS(...) ((const char *const[]) { __VA_ARGS__, NULL })
#define NO_ATTRS ((const char *const[]) { NULL })
#define CHOICES(...) ((const char *const[]) { __VA_ARGS__, NULL })
#define FOREACH_ELEMENT(c, parent) \
        for (xmlNode *c = xmlFirstElementChild(parent); c; c = xmlNextElementSibling(c))

static inline bool node_is(xmlNode *n, const char *name) {
        return strcmp((const char *) n->name, name) == 0;
}

int domain_xml_parse_domain(DomainXmlParser *p, xmlNode *root, DomainDef **ret);
int domain_xml_parse_devices(DomainXmlParser *p, xmlNode *devices, DomainDef *def);
