/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Domain XML -> DomainDef. The document comes from callers we do not trust (any bus client
 * may define a domain), so: no DTDs or entities at all (a DOCTYPE stops the parser the moment
 * libxml2 sees it, before any entity is declared), no network, libxml2's default depth and
 * size limits (no XML_PARSE_HUGE), our own size limit, and a whitelist of elements and
 * attributes: anything not in docs/domain-xml.md is refused by name and line rather than
 * silently dropped, except for the few elements listed there as ignored. */

#include <errno.h>
#include <glib.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdarg.h>
#include <string.h>

#include "domain-def.h"
#include "domain-xml-internal.h"

static const char *node_name(xmlNode *n) {
        return n ? (const char *) n->name : "domain";
}

int domain_xml_fail(DomainXmlParser *p, xmlNode *node, const char *format, ...) {
        va_list ap;
        g_autofree char *msg = NULL;

        if (p->error)           /* the first error is the one that explains */
                return -EINVAL;
        va_start(ap, format);
        msg = g_strdup_vprintf(format, ap);
        va_end(ap);
        if (node && node->ns && node->ns->prefix)
                p->error = g_strdup_printf("line %ld: <%s:%s>: %s", xmlGetLineNo(node),
                                           (const char *) node->ns->prefix, node_name(node), msg);
        else
                p->error = g_strdup_printf("line %ld: <%s>: %s", node ? xmlGetLineNo(node) : 1L,
                                           node_name(node), msg);
        return -EINVAL;
}

int domain_xml_check_attrs(DomainXmlParser *p, xmlNode *node, const char *const *allowed) {
        for (xmlAttr *a = node->properties; a; a = a->next) {
                bool ok = false;

                if (a->ns)
                        return domain_xml_fail(p, node, "attribute '%s:%s' is not supported",
                                               (const char *) a->ns->prefix, (const char *) a->name);
                for (const char *const *k = allowed; k && *k; k++)
                        if (strcmp(*k, (const char *) a->name) == 0)
                                ok = true;
                if (!ok)
                        return domain_xml_fail(p, node, "attribute '%s' is not supported",
                                               (const char *) a->name);
        }
        return 0;
}

char *domain_xml_attr(xmlNode *node, const char *name) {
        xmlChar *v = xmlGetNoNsProp(node, (const xmlChar *) name);
        char *r = g_strdup((const char *) v);

        xmlFree(v);
        return r;
}

/* Children of a container element: only elements, comments and whitespace. */
int domain_xml_check_children(DomainXmlParser *p, xmlNode *node) {
        for (xmlNode *c = node->children; c; c = c->next)
                switch (c->type) {
                case XML_ELEMENT_NODE:
                        if (c->ns)
                                return domain_xml_fail(p, c, "namespaced elements are not supported");
                        break;
                case XML_TEXT_NODE:
                case XML_CDATA_SECTION_NODE:
                        for (const xmlChar *s = c->content; s && *s; s++)
                                if (!g_ascii_isspace(*s))
                                        return domain_xml_fail(p, node, "unexpected text");
                        break;
                case XML_COMMENT_NODE:
                case XML_PI_NODE:
                        break;
                default:
                        return domain_xml_fail(p, node, "unexpected content");
                }
        return 0;
}

/* Text of an element that has no child elements. */
int domain_xml_text(DomainXmlParser *p, xmlNode *node, size_t max, char **ret) {
        xmlChar *v;
        char *s;

        for (xmlNode *c = node->children; c; c = c->next)
                if (c->type != XML_TEXT_NODE && c->type != XML_CDATA_SECTION_NODE &&
                    c->type != XML_COMMENT_NODE)
                        return domain_xml_fail(p, node, "only text is allowed here");
        v = xmlNodeGetContent(node);
        s = g_strdup(v ? (const char *) v : "");
        xmlFree(v);
        if (strlen(s) > max) {
                g_free(s);
                return domain_xml_fail(p, node, "text longer than %zu bytes", max);
        }
        *ret = s;
        return 0;
}

/* Text with surrounding blanks removed, for numbers and keywords. */
int domain_xml_text_stripped(DomainXmlParser *p, xmlNode *node, char **ret) {
        char *s;
        int r;

        r = domain_xml_text(p, node, DOMAIN_TEXT_MAX, &s);
        if (r < 0)
                return r;
        *ret = g_strstrip(s);
        return 0;
}

int domain_xml_enum(DomainXmlParser *p, xmlNode *node, const char *what, const char *value,
                    int (*from_string)(const char *), const char *const *choices) {
        g_autofree char *list = NULL;
        int v = from_string(value);

        if (v >= 0)
                return v;
        list = g_strjoinv(", ", (char **) choices);
        return domain_xml_fail(p, node, "%s '%s' is not supported (supported: %s)",
                               what, value, list);
}

int domain_xml_uint(DomainXmlParser *p, xmlNode *node, const char *what, const char *value,
                    uint64_t min, uint64_t max, uint64_t *ret) {
        guint64 v;

        if (!g_ascii_string_to_unsigned(value, 10, 0, G_MAXUINT64, &v, NULL))
                return domain_xml_fail(p, node, "%s '%s' is not a number", what, value);
        if (v < min || v > max)
                return domain_xml_fail(p, node, "%s %s is out of range %" PRIu64 "..%" PRIu64,
                                       what, value, min, max);
        *ret = v;
        return 0;
}

/* Elements that may appear at most once among their siblings. */
int domain_xml_once(DomainXmlParser *p, xmlNode *node, xmlNode **seen) {
        if (*seen)
                return domain_xml_fail(p, node, "may appear only once (first on line %ld)",
                                       xmlGetLineNo(*seen));
        *seen = node;
        return 0;
}

static void refuse_doctype(void *ctx, const xmlChar *name, const xmlChar *external_id,
                           const xmlChar *system_id) {
        xmlParserCtxt *ctxt = ctx;

        *(long *) ctxt->_private = ctxt->input ? ctxt->input->line : 1;
        xmlStopParser(ctxt);
}

static void refuse_entity_decl(void *ctx, const xmlChar *name, int type, const xmlChar *public_id,
                               const xmlChar *system_id, xmlChar *content) {
        refuse_doctype(ctx, NULL, NULL, NULL);
}

static int read_document(const char *xml, size_t length, xmlDoc **ret, char **ret_error) {
        xmlParserCtxt *ctxt;
        xmlDoc *doc;
        long doctype_line = 0;

        if (length > DOMAIN_XML_SIZE_MAX) {
                *ret_error = g_strdup_printf("line 1: <domain>: document is %zu bytes, the limit is %d",
                                             length, DOMAIN_XML_SIZE_MAX);
                return -E2BIG;
        }

        xmlInitParser();
        ctxt = xmlNewParserCtxt();
        if (!ctxt)
                return -ENOMEM;
        /* Our hooks run before libxml2 builds the DTD or declares any entity. */
        ctxt->_private = &doctype_line;
        ctxt->sax->internalSubset = refuse_doctype;
        ctxt->sax->externalSubset = refuse_doctype;
        ctxt->sax->entityDecl = refuse_entity_decl;

        /* No XML_PARSE_NOENT (entity substitution), no XML_PARSE_DTDLOAD/DTDATTR/DTDVALID,
         * no XML_PARSE_HUGE (keeps libxml2's depth and text limits), no XInclude. The
         * encoding is forced so no declared encoding can hide markup from the checks. */
        doc = xmlCtxtReadMemory(ctxt, xml, (int) length, "domain.xml", "UTF-8",
                                XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
                                XML_PARSE_BIG_LINES | XML_PARSE_NOCDATA);
        if (doctype_line > 0) {
                *ret_error = g_strdup_printf("line %ld: <!DOCTYPE>: document type declarations "
                                             "are not allowed (no DTDs, no entities)", doctype_line);
                xmlFreeDoc(doc);
                xmlFreeParserCtxt(ctxt);
                return -EINVAL;
        }
        if (!doc || !ctxt->wellFormed) {
                const xmlError *e = xmlCtxtGetLastError(ctxt);
                g_autofree char *msg = g_strdup(e && e->message ? e->message : "not well-formed");

                *ret_error = g_strdup_printf("line %d: malformed XML: %s", e ? e->line : 1,
                                             g_strstrip(msg));
                xmlFreeDoc(doc);
                xmlFreeParserCtxt(ctxt);
                return -EINVAL;
        }
        xmlFreeParserCtxt(ctxt);
        *ret = doc;
        return 0;
}

int domain_def_parse(const char *xml, size_t length, DomainDef **ret, char **ret_error) {
        g_autofree char *error = NULL;
        xmlDoc *doc = NULL;
        xmlNode *root;
        DomainDef *def = NULL;
        int r;

        if (!xml)
                return -EINVAL;
        r = read_document(xml, length, &doc, &error);
        if (r >= 0) {
                root = xmlDocGetRootElement(doc);
                if (!root || root->ns || strcmp((const char *) root->name, "domain") != 0) {
                        error = g_strdup_printf("line %ld: <%s>: the root element must be <domain>",
                                                root ? xmlGetLineNo(root) : 1L,
                                                root ? (const char *) root->name : "");
                        r = -EINVAL;
                } else {
                        DomainXmlParser p = {};
                        r = domain_xml_parse_domain(&p, root, &def);
                        error = TAKE_PTR(p.error);
                }
                xmlFreeDoc(doc);
        }
        if (r < 0) {
                if (ret_error)
                        *ret_error = error ? TAKE_PTR(error) : g_strdup(g_strerror(-r));
                return r;
        }
        *ret = def;
        return 0;
}
