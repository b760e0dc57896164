//! `GET /openapi.json`: the API description, generated from the handlers'
//! annotations and the request/response types.

use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "docent",
        description = "Retrieval-augmented question answering over your documents. Errors are `{\"error\": {\"type\", \"message\"}}`. When API keys are configured every /v1 route needs `Authorization: Bearer KEY`."
    ),
    paths(
        crate::ask::ask,
        crate::ask::search,
        crate::documents::upload,
        crate::documents::list,
        crate::documents::get,
        crate::documents::delete,
        crate::collections::list,
        crate::openai::chat_completions,
        crate::openai::embeddings,
        crate::openai::models,
        crate::healthz,
        crate::ready,
        crate::metrics_doc,
    ),
    components(schemas(
        crate::error::ErrorBody,
        docent_query::Citation,
        docent_query::Timings,
        docent_query::Usage,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "ask", description = "Answers with citations"),
        (name = "search", description = "Semantic and keyword search without generation"),
        (name = "documents", description = "The document catalogue: upload, list, delete"),
        (name = "openai", description = "OpenAI-compatible endpoints"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
