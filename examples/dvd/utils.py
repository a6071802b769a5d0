# A stand-in for the part of DeepVideoDiscovery's dvd/utils.py that migrator reads. As
# released, its get_embeddings posts to OpenAI's fixed URL (or an Azure deployment route),
# so DVD cannot reach a vLLM server until it is changed: `migrate plan` and the cutover
# say so, and what to change. Written for this example; not DVD's code.
import json
import urllib.request


class AzureOpenAIEmbeddingService:
    @staticmethod
    def get_embeddings(endpoints, model_name, input_text, api_key=None):
        url = "https://api.openai.com/v1/embeddings"
        body = json.dumps({"input": input_text, "model": model_name}).encode()
        req = urllib.request.Request(url, data=body, headers={"Authorization": f"Bearer {api_key}",
                                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())["data"]
